-- The index schema of flowbatch schema version 1 (SQLite), as created by that version.
-- tests/test_migrate.py builds a v1 index from it and upgrades it.
CREATE TABLE "meta_row" ("key" VARCHAR(64) NOT NULL PRIMARY KEY, "value" TEXT NOT NULL);
CREATE TABLE "result_row" ("id" INTEGER NOT NULL PRIMARY KEY, "run" VARCHAR(64) NOT NULL, "name" VARCHAR(256) NOT NULL, "value_num" REAL, "value_text" TEXT);
CREATE TABLE "run_file_row" ("id" INTEGER NOT NULL PRIMARY KEY, "run" VARCHAR(64) NOT NULL, "key" VARCHAR(1024) NOT NULL, "source" VARCHAR(1024) NOT NULL, "size" INTEGER, "title" TEXT, "caption" TEXT);
CREATE TABLE "run_row" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "workflow" VARCHAR(64) NOT NULL, "version" VARCHAR(64) NOT NULL, "group" VARCHAR(256) NOT NULL, "name" VARCHAR(512), "owner" VARCHAR(256) NOT NULL, "owner_uid" INTEGER NOT NULL, "request" VARCHAR(512) NOT NULL, "state" VARCHAR(16) NOT NULL, "created_at" VARCHAR(40) NOT NULL, "started_at" VARCHAR(40), "finished_at" VARCHAR(40), "executor" VARCHAR(64) NOT NULL, "arguments" TEXT NOT NULL, "results" TEXT, "messages" TEXT NOT NULL, "run_dir" TEXT NOT NULL);
CREATE TABLE "state_change_row" ("id" INTEGER NOT NULL PRIMARY KEY, "run" VARCHAR(64) NOT NULL, "state" VARCHAR(16) NOT NULL, "at" VARCHAR(40) NOT NULL, "message" TEXT);
CREATE TABLE "workflow_row" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "name" VARCHAR(512) NOT NULL, "description" TEXT, "version" VARCHAR(64) NOT NULL, "installed_at" VARCHAR(40) NOT NULL, "has_results" INTEGER NOT NULL);
CREATE INDEX "result_row_run" ON "result_row" ("run");
CREATE INDEX "run_file_row_run" ON "run_file_row" ("run");
CREATE INDEX "run_row_group" ON "run_row" ("group");
CREATE INDEX "run_row_state" ON "run_row" ("state");
CREATE INDEX "run_row_workflow" ON "run_row" ("workflow");
CREATE INDEX "state_change_row_run" ON "state_change_row" ("run");
