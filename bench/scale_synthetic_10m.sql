-- A stand-in for bench/scale.py's 10M-event SQLite database, for the report steps that read
-- only the hourly rollups over whole hours (forecast on the hour, simulate --history over a
-- UTC month): on a copy of the kept 1M database (customers, subscriptions, the close's
-- invoices, the 1M events), usage_rollup is replaced by the rows the import of
-- bench/scale.py's 10,000,000 events would write (same generator arithmetic: customer
-- i % 10000, second i * 2592 // 10000 (the generator's int(i * 0.2592) in integers), model i % 4, feature i % 5, tokens 1500 + i % 900 and
-- 200 + i % 300, the cost book's prices of the four models). Built in a few minutes where the
-- import takes over an hour on a loaded machine; it is NOT the benchmark: the events table
-- keeps 1M rows. Every event carries token counts (``tokened`` = ``events``: the margin report's
-- cost split reads the rollups, as it does on the imported database).
--     cp DIR/scale-1000000-10000.db synth10m.db && sqlite3 synth10m.db < bench/scale_synthetic_10m.sql
PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE; PRAGMA cache_size=-200000;
DELETE FROM usage_rollup;
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM s WHERE i < 9999999),
e AS (SELECT printf('cust-%05d', i % 10000) AS c,
             1790812800000000 + ((i * 2592 / 10000) / 3600) * 3600000000 AS h,
             CASE i % 4 WHEN 0 THEN 'claude-sonnet-4-5' WHEN 1 THEN 'gpt-5-mini' WHEN 2 THEN 'claude-haiku-4-5' ELSE 'gemini-2.5-flash' END AS m,
             CASE i % 5 WHEN 3 THEN '{"feature":"search"}' WHEN 4 THEN '{"feature":"summarize"}' ELSE '{"feature":"support-chat"}' END AS d,
             1500 + i % 900 AS inp, 200 + i % 300 AS outp, i % 4 AS k FROM s)
INSERT INTO usage_rollup (customer_id, hour, type, model, dims, events, cost_pico, cost_carry, input_tokens, output_tokens,
                          cache_read_tokens, cache_write_tokens, reasoning_tokens, sums, rounded, odd, tokened)
SELECT c, h, 'llm.call', m, d, COUNT(*),
       SUM(CASE k WHEN 0 THEN inp * 3000000 + outp * 15000000 WHEN 1 THEN inp * 250000 + outp * 2000000
                  WHEN 2 THEN inp * 1000000 + outp * 5000000 ELSE inp * 300000 + outp * 2500000 END),
       0, SUM(inp), SUM(outp), 0, 0, 0, '{}', 0, 0, COUNT(*)
FROM e GROUP BY c, h, m, d ORDER BY c, h, m, d;
ANALYZE;
SELECT COUNT(*), SUM(events) FROM usage_rollup;
