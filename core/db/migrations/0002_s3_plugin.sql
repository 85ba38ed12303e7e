CREATE TABLE `s3_buckets` (
	`repository` text NOT NULL,
	`name` text NOT NULL,
	`owner` text NOT NULL,
	`region` text DEFAULT '' NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`repository`, `name`)
);
--> statement-breakpoint
CREATE TABLE `s3_parts` (
	`upload_id` text NOT NULL,
	`part_number` integer NOT NULL,
	`storage_key` text NOT NULL,
	`size_bytes` integer NOT NULL,
	`md5` text NOT NULL,
	`checksum` text,
	`modified_at` integer NOT NULL,
	PRIMARY KEY(`upload_id`, `part_number`),
	FOREIGN KEY (`upload_id`) REFERENCES `s3_uploads`(`upload_id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `s3_uploads` (
	`upload_id` text PRIMARY KEY NOT NULL,
	`repository` text NOT NULL,
	`bucket` text NOT NULL,
	`key` text NOT NULL,
	`owner` text NOT NULL,
	`content_type` text,
	`headers` text DEFAULT '{}' NOT NULL,
	`checksum_algorithm` text,
	`initiated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `s3_uploads_bucket_idx` ON `s3_uploads` (`repository`,`bucket`,`key`);