CREATE TABLE `oci_uploads` (
	`repository` text NOT NULL,
	`id` text PRIMARY KEY NOT NULL,
	`image` text NOT NULL,
	`path` text NOT NULL,
	`size_bytes` integer DEFAULT 0 NOT NULL,
	`writer` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `oci_uploads_repository_idx` ON `oci_uploads` (`repository`,`updated_at`);