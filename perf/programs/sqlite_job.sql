-- The sqlite3 workload (an in-memory database: every page comes from malloc).
-- @ROWS@ is replaced by the harness with the row count of the mode (full/quick).
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL, payload TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < @ROWS@)
INSERT INTO t SELECT x, 'name' || (x * 7919 % 100003), x % 97, (x * 31 % 1000) / 7.0,
                     printf('%.*c', x % 200, 'x') FROM c;
CREATE INDEX t_name ON t(name);
CREATE INDEX t_grp_val ON t(grp, val);
SELECT grp, count(*), avg(val), max(length(payload)) FROM t GROUP BY grp ORDER BY 2 DESC, 1 LIMIT 3;
SELECT count(DISTINCT name) FROM t;
SELECT name, length(group_concat(id)) FROM (SELECT name, id FROM t ORDER BY val, id LIMIT 50000)
  GROUP BY name ORDER BY name LIMIT 3;
UPDATE t SET payload = upper(payload) || name WHERE id % 3 = 0;
DELETE FROM t WHERE grp < 20;
CREATE TABLE u AS SELECT grp, name, sum(val) AS s FROM t GROUP BY grp, name;
SELECT count(*), sum(length(payload)) FROM t;
SELECT count(*), round(sum(s)) FROM u;
