-- PostgreSQL's stand-in for bench/scale.py's 10M-event database (bench/scale_synthetic_10m.sql
-- is SQLite's; read its header): on a copy of the kept 1M database, usage_rollup is replaced by
-- the rows the import of bench/scale.py's 10,000,000 events would write (same generator
-- arithmetic: customer i % 10000, second i * 2592 / 10000, model i % 4, feature i % 5, tokens
-- 1500 + i % 900 and 200 + i % 300, the cost book's prices of the four models; every event
-- carries token counts). It is NOT the benchmark: the events table keeps 1M rows.
--     createdb -T billing_scalebench_<tag>1000000_10000 synth10m && psql -X -d synth10m -f bench/scale_synthetic_10m_pg.sql
SET work_mem = '256MB';
TRUNCATE usage_rollup;
INSERT INTO usage_rollup (customer_id, hour, type, model, dims, events, cost_pico, cost_carry, input_tokens, output_tokens,
                          cache_read_tokens, cache_write_tokens, reasoning_tokens, sums, rounded, odd, tokened)
SELECT c, h, 'llm.call', m, d, COUNT(*),
       SUM(CASE k WHEN 0 THEN inp * 3000000 + outp * 15000000 WHEN 1 THEN inp * 250000 + outp * 2000000
                  WHEN 2 THEN inp * 1000000 + outp * 5000000 ELSE inp * 300000 + outp * 2500000 END),
       0, SUM(inp), SUM(outp), 0, 0, 0, '{}', 0, 0, COUNT(*)
FROM (SELECT 'cust-' || lpad((i % 10000)::text, 5, '0') AS c,
             1790812800000000 + ((i * 2592 / 10000) / 3600) * 3600000000 AS h,
             CASE i % 4 WHEN 0 THEN 'claude-sonnet-4-5' WHEN 1 THEN 'gpt-5-mini' WHEN 2 THEN 'claude-haiku-4-5'
                        ELSE 'gemini-2.5-flash' END AS m,
             CASE i % 5 WHEN 3 THEN '{"feature":"search"}' WHEN 4 THEN '{"feature":"summarize"}'
                        ELSE '{"feature":"support-chat"}' END AS d,
             1500 + i % 900 AS inp, 200 + i % 300 AS outp, i % 4 AS k
      FROM generate_series(0::bigint, 9999999::bigint) AS s(i)) AS e
GROUP BY c, h, m, d ORDER BY c, h, m, d;
VACUUM ANALYZE usage_rollup;
SELECT COUNT(*), SUM(events) FROM usage_rollup;
