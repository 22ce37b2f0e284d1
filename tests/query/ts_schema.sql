-- Schema ts exactly as docs/contracts specify; used only when ingest's migrations cannot run.
-- Executed as role tsmesh_ingest so the default privileges grant SELECT to tsmesh_ts_reader.
CREATE TABLE IF NOT EXISTS ts.series (
  series_id bigint PRIMARY KEY,
  tenant_id text NOT NULL,
  metric text NOT NULL,
  labels jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS series_tenant_metric_idx ON ts.series (tenant_id, metric);
CREATE INDEX IF NOT EXISTS series_labels_gin_idx ON ts.series USING gin (labels);
CREATE TABLE IF NOT EXISTS ts.points (
  series_id bigint NOT NULL,
  ts bigint NOT NULL,
  value double precision NOT NULL,
  CONSTRAINT points_series_ts_key UNIQUE (series_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS points_ts_brin_idx ON ts.points USING brin (ts);
CREATE TABLE IF NOT EXISTS ts.rollup_1m (
  series_id bigint NOT NULL, bucket bigint NOT NULL, count bigint NOT NULL,
  sum double precision NOT NULL, min double precision NOT NULL, max double precision NOT NULL,
  first_ts bigint NOT NULL, first double precision NOT NULL, last_ts bigint NOT NULL, last double precision NOT NULL,
  PRIMARY KEY (series_id, bucket)
);
CREATE TABLE IF NOT EXISTS ts.rollup_1h (LIKE ts.rollup_1m INCLUDING ALL);
ALTER TABLE ts.rollup_1m ADD COLUMN IF NOT EXISTS ascending boolean, ADD COLUMN IF NOT EXISTS distinct_ms boolean;
CREATE TABLE IF NOT EXISTS ts.rollup_pending (
  id bigserial PRIMARY KEY,
  series_id bigint NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_pending_series_idx ON ts.rollup_pending (series_id);
