CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` integer NOT NULL,
	`name` text NOT NULL,
	`kind` text DEFAULT 'api' NOT NULL,
	`secret_hash` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer,
	`last_used_at` integer,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `api_tokens_user_idx` ON `api_tokens` (`user_id`);--> statement-breakpoint
CREATE TABLE `artifacts` (
	`repository` text NOT NULL,
	`path` text NOT NULL,
	`blob_digest` text,
	`size_bytes` integer DEFAULT 0 NOT NULL,
	`content_type` text,
	`status` integer DEFAULT 200 NOT NULL,
	`kind` text DEFAULT 'artifact' NOT NULL,
	`upstream_etag` text,
	`upstream_last_modified` text,
	`etag` text,
	`headers` text,
	`cache_flags` text,
	`fetched_at` integer NOT NULL,
	`expires_at` integer,
	`last_access_at` integer NOT NULL,
	`hit_count` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`repository`, `path`)
);
--> statement-breakpoint
CREATE INDEX `artifacts_blob_idx` ON `artifacts` (`blob_digest`);--> statement-breakpoint
CREATE TABLE `audit_log` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`repository` text,
	`path` text,
	`detail` text,
	`remote_addr` text,
	`request_id` text
);
--> statement-breakpoint
CREATE INDEX `audit_log_at_idx` ON `audit_log` (`at`);--> statement-breakpoint
CREATE TABLE `blobs` (
	`digest` text PRIMARY KEY NOT NULL,
	`size_bytes` integer NOT NULL,
	`ref_count` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `permissions` (
	`user_id` integer NOT NULL,
	`repository` text NOT NULL,
	`actions` text NOT NULL,
	PRIMARY KEY(`user_id`, `repository`),
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `users` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`password_hash` text,
	`is_admin` integer DEFAULT false NOT NULL,
	`disabled` integer DEFAULT false NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `users_name_unique` ON `users` (`name`);