-- gatehouse SQL compatibility corpus: one or more statements of every construct
-- class of PostgreSQL's documented grammar (PostgreSQL 15), valid as written.
-- Run through the gateway by an identity allowed everything, the output must be
-- the direct run's; run by a developer, every refusal must name a rule and none
-- may be "could not be analyzed". Everything lives in schema compat, dropped at the end.

-- Schemas, search path, types, domains
CREATE SCHEMA compat;
SET search_path = compat, public;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SEQUENCE seq START 10 INCREMENT BY 5;

-- Tables: constraints, defaults, generated and identity columns, arrays, ranges, json
CREATE TABLE items (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    qty posint DEFAULT 1,
    tags text[] DEFAULT '{}',
    feeling mood,
    doc jsonb,
    span int4range,
    total numeric(10, 2) GENERATED ALWAYS AS (qty * 2.5) STORED,
    CONSTRAINT name_len CHECK (length(name) < 100)
);
CREATE TABLE stock (item_id int REFERENCES items (id) ON DELETE CASCADE, level int, note text);
CREATE TABLE staging (id int, name text, qty int);
CREATE TABLE marks (x int);
CREATE TABLE "Mixed Case" ("Col" int, "sel;ect" text);
CREATE UNLOGGED TABLE scratch (x int) WITH (fillfactor = 90);
CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE copy_of (LIKE items INCLUDING DEFAULTS);
CREATE TEMP TABLE tmp AS SELECT 1 AS one;
CREATE UNIQUE INDEX items_lower_name ON items (lower(name));
CREATE INDEX items_tags ON items USING gin (tags);
CREATE UNIQUE INDEX stock_item ON stock (item_id) WHERE level IS NOT NULL;
ALTER TABLE stock ADD COLUMN added date DEFAULT DATE '2020-01-01';
ALTER TABLE stock ALTER COLUMN note SET DEFAULT 'none';
ALTER TABLE stock RENAME COLUMN added TO added_on;
ALTER TABLE scratch SET LOGGED;
COMMENT ON TABLE items IS 'things we sell';
COMMENT ON COLUMN items.name IS E'the item\'s name';

-- Views, materialized views, functions, procedures, triggers, rules
CREATE VIEW item_names AS SELECT id, name FROM items WHERE qty > 0;
CREATE MATERIALIZED VIEW item_counts AS SELECT count(*) AS n FROM items WITH NO DATA;
CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$;
CREATE FUNCTION sum_all(VARIADIC nums int[]) RETURNS int LANGUAGE sql AS 'SELECT sum(n)::int FROM unnest(nums) n';
CREATE FUNCTION pairs() RETURNS SETOF record LANGUAGE sql AS $body$ VALUES (1, 'one'::text), (2, 'two') $body$;
CREATE FUNCTION atomic_sum(a int, b int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT a + b;
END;
CREATE PROCEDURE bump(n int) LANGUAGE plpgsql AS $$
BEGIN
    UPDATE compat.stock SET level = level + n WHERE item_id = 1;
END
$$;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END $$;
CREATE TRIGGER stock_touch BEFORE INSERT ON stock FOR EACH ROW EXECUTE FUNCTION touch();
CREATE RULE scratch_log AS ON INSERT TO scratch DO ALSO (SELECT 1; SELECT 2);

-- INSERT: VALUES, DEFAULT VALUES, SELECT, RETURNING, ON CONFLICT, OVERRIDING
INSERT INTO items (name, qty, tags, feeling, doc, span) VALUES
    ('apple', 3, ARRAY['fruit', 'red'], 'happy', '{"a": {"b": [1, 2]}}', '[1,5)'),
    ('pear', 2, '{fruit}', 'ok', '{"a": 1}', int4range(2, 8)),
    ('nut', 7, '{}', NULL, NULL, NULL);
INSERT INTO items (id, name) OVERRIDING SYSTEM VALUE VALUES (100, 'fixed id');
INSERT INTO staging VALUES (1, 'apple', 10), (2, 'kiwi', 4);
INSERT INTO stock (item_id, level) SELECT id, qty FROM items RETURNING item_id, level, note;
INSERT INTO items (name) VALUES ('apple') ON CONFLICT (name) DO NOTHING;
INSERT INTO items (name, qty) VALUES ('pear', 9) ON CONFLICT (name) DO UPDATE SET qty = excluded.qty WHERE items.qty < 9;
INSERT INTO items (name) VALUES ('Apple') ON CONFLICT ((lower(name))) DO NOTHING;
INSERT INTO items (name) VALUES ('nut') ON CONFLICT ON CONSTRAINT items_name_key DO NOTHING;
INSERT INTO copy_of (id, name, tags[1]) VALUES (1, 'arrays', 'first');
INSERT INTO scratch DEFAULT VALUES;
INSERT INTO "Mixed Case" VALUES (1, 'a;b');

-- SELECT: every clause
SELECT;
SELECT FROM items WHERE false;
SELECT id, name FROM items ORDER BY id LIMIT 2 OFFSET 1;
SELECT DISTINCT ON (feeling) feeling, name FROM items ORDER BY feeling, name;
SELECT feeling, count(*) FILTER (WHERE qty > 2) AS many, sum(qty) FROM items GROUP BY feeling HAVING count(*) > 0 ORDER BY feeling NULLS FIRST;
SELECT feeling, sum(qty) FROM items GROUP BY GROUPING SETS ((feeling), ()) ORDER BY 1, 2;
SELECT name, rank() OVER w, lag(qty) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM items WINDOW w AS (PARTITION BY feeling ORDER BY qty DESC) ORDER BY name;
SELECT i.name, s.level FROM items i JOIN stock s ON s.item_id = i.id LEFT JOIN staging g USING (name) ORDER BY 1;
SELECT i.name, x.n FROM items i CROSS JOIN LATERAL (SELECT count(*) AS n FROM stock s WHERE s.item_id = i.id) x ORDER BY 1;
SELECT * FROM items NATURAL FULL JOIN copy_of WHERE false;
SELECT name FROM items WHERE id IN (SELECT item_id FROM stock) AND EXISTS (SELECT 1 FROM staging) ORDER BY 1;
SELECT name FROM items WHERE qty > ALL (SELECT qty FROM staging WHERE qty < 2) ORDER BY 1;
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT sum(n) FROM r;
WITH m AS MATERIALIZED (SELECT * FROM items) SELECT count(*) FROM m;
SELECT name FROM items UNION SELECT name FROM staging INTERSECT SELECT name FROM items EXCEPT SELECT 'zzz' ORDER BY 1;
(SELECT 1 AS x) UNION ALL (SELECT 2) ORDER BY x DESC;
VALUES (1, 'a'), (2, 'b') ORDER BY 1;
TABLE staging ORDER BY id;
SELECT * FROM staging ORDER BY id FETCH FIRST 1 ROWS ONLY;
SELECT * FROM staging ORDER BY qty FETCH FIRST 1 ROW WITH TIES;
SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(v, i);
SELECT * FROM ROWS FROM (generate_series(1, 2), generate_series(5, 7)) AS r(a, b);
SELECT * FROM pairs() AS p(n int, word text) ORDER BY n;
SELECT * FROM json_to_record('{"a": 1, "b": "x"}') AS r(a int, b text);
SELECT count(*) FROM items TABLESAMPLE SYSTEM (100) REPEATABLE (7);
SELECT name INTO TEMP copy_names FROM items;
SELECT * FROM items FOR UPDATE SKIP LOCKED;
SELECT * FROM stock FOR NO KEY UPDATE OF stock NOWAIT;

-- Expressions and literals
SELECT 'a'
    'b' AS continued, E'tab\there\x21\u0021' AS escaped, U&'d\0061t\+000061' AS unicode, U&'d!0061ta' UESCAPE '!' AS uescape;
SELECT $$dollar$$, $tag$with $$ inside$tag$, B'1010', X'1F', N'national';
SELECT 1e3, .5, 1.5e-3, 0.1::real, 123::bigint, 3 / 2, 3 % 2, 2 ^ 10, |/ 16, @ -5, ~5, 5 & 3, 5 | 3, 5 # 3, 1 << 4;
SELECT U&"d\0061t\+000061" FROM (SELECT 1 AS data) s;
SELECT "Col", "sel;ect" FROM "Mixed Case";
SELECT CAST(name 'x' AS text), int '42', '3'::int + 1, CAST('{1,2}' AS int[]), text 'abc' || 'def';
SELECT trim(both from '  x  '), trim(leading 'x' from 'xxy'), trim('  z '), substring('hello' from 2 for 3), position('l' in 'hello'), overlay('hello' placing 'J' from 1 for 1);
SELECT extract(year from DATE '2021-06-01'), date_part('month', TIMESTAMP '2021-06-01 10:00'), TIMESTAMP '2021-01-01 00:00:00' AT TIME ZONE 'UTC', INTERVAL '1 day' * 2;
SELECT CASE WHEN qty > 2 THEN 'many' WHEN qty = 2 THEN 'two' ELSE 'few' END, coalesce(feeling::text, '-'), nullif(qty, 3), greatest(1, qty), least(1, qty) FROM items ORDER BY id;
SELECT qty ISNULL, qty NOTNULL, qty IS NOT DISTINCT FROM 3, feeling IS NULL, (qty > 1) IS TRUE FROM items ORDER BY id;
SELECT 'abc' LIKE 'a%', 'abc' ILIKE 'A_C', 'abc' SIMILAR TO '(a|b)%', 'abc' ~ '^a', 'abc' ~* 'B', 'abc' !~ 'z', 3 BETWEEN SYMMETRIC 5 AND 1;
SELECT (ARRAY[1, 2, 3])[2], (ARRAY[1, 2, 3])[1:2], ARRAY(SELECT id FROM items ORDER BY id), 2 = ANY (ARRAY[1, 2]), cardinality(tags) FROM items ORDER BY id LIMIT 1;
SELECT doc -> 'a', doc ->> 'a', doc #> '{a,b}', doc @> '{"a": 1}', doc ? 'a', jsonb_path_query_array(doc, '$.a') FROM items ORDER BY id;
SELECT span @> 3, span && int4range(4, 6), upper(span), lower_inc(span) FROM items ORDER BY id;
SELECT ROW(1, 'x')::pair, (ROW(1, 'x')::pair).b, ('(2,y)'::pair).a;
SELECT sum_all(1, 2, 3), sum_all(VARIADIC ARRAY[4, 5]), add_one(i => 1), atomic_sum(2, 3);
SELECT 'b' COLLATE "C" < 'a', 1 OPERATOR(pg_catalog.+) 2, string_agg(name, ',' ORDER BY name) FROM items;
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY qty) FROM items;
SELECT nextval('seq'), currval('seq');
SELECT xmlelement(name item, xmlattributes(1 AS id), 'text'), xmlforest(1 AS a);
SELECT 1 -- a comment ending in a carriage return
; SELECT 2 /* a /* nested */ comment */;
SELECT 'a;b' AS "semi;colon", $q$;$q$ AS dollar_semicolon;

-- UPDATE and DELETE: FROM, USING, RETURNING, subscripts, composite fields, cursors
UPDATE items SET qty = qty + 1 WHERE name = 'apple' RETURNING qty;
UPDATE items SET tags[1] = 'FRUIT' WHERE name = 'apple';
UPDATE items SET tags[1:2] = ARRAY['a', 'b'] WHERE name = 'pear';
UPDATE items SET (qty, feeling) = (SELECT 5, 'sad'::mood) WHERE name = 'nut';
UPDATE stock s SET level = i.qty FROM items i WHERE s.item_id = i.id AND i.name = 'pear';
DELETE FROM staging USING items WHERE staging.name = items.name AND items.name = 'apple' RETURNING staging.id;
DELETE FROM scratch WHERE x IS NULL;
BEGIN;
DECLARE c CURSOR FOR SELECT * FROM stock ORDER BY item_id FOR UPDATE;
FETCH NEXT FROM c;
UPDATE stock SET level = 0 WHERE CURRENT OF c;
MOVE FORWARD 1 IN c;
DELETE FROM stock WHERE CURRENT OF c;
CLOSE c;
COMMIT;

-- MERGE
MERGE INTO items i USING staging s ON i.name = s.name
    WHEN MATCHED AND s.qty > 100 THEN DELETE
    WHEN NOT MATCHED THEN INSERT (name, qty) VALUES (s.name, s.qty);
MERGE INTO marks t USING (VALUES (1)) v(x) ON t.x = v.x WHEN NOT MATCHED THEN INSERT DEFAULT VALUES;
MERGE INTO stock t USING items s ON t.item_id = s.id WHEN MATCHED AND s.name = 'nut' THEN UPDATE SET level = 1 WHEN MATCHED THEN DO NOTHING;

-- COPY
COPY staging (id, name, qty) FROM STDIN WITH (FORMAT csv);
7,fig,3
8,lime,5
\.
COPY staging FROM STDIN WHERE qty > 1;
9	plum	2
10	sloe	0
\.
COPY (SELECT id, name FROM staging ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);
COPY staging TO STDOUT;

-- Transactions
BEGIN ISOLATION LEVEL REPEATABLE READ;
SAVEPOINT s1;
INSERT INTO scratch VALUES (42);
ROLLBACK TO SAVEPOINT s1;
RELEASE SAVEPOINT s1;
COMMIT;
START TRANSACTION READ ONLY;
SELECT count(*) FROM items;
ROLLBACK;
BEGIN; SET LOCAL work_mem = '8MB'; SHOW work_mem; END;

-- Prepared statements, EXPLAIN, utility statements
PREPARE get_item (int) AS SELECT name FROM items WHERE id = $1;
EXECUTE get_item(1);
DEALLOCATE get_item;
PREPARE upd AS UPDATE items SET qty = qty WHERE id = 1;
EXECUTE upd;
DEALLOCATE ALL;
EXPLAIN (COSTS OFF) SELECT * FROM items WHERE id = 1;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT 1;
EXPLAIN (ANALYSE true, COSTS false, TIMING false, SUMMARY false) SELECT 1;
EXPLAIN (FORMAT json, COSTS off) DELETE FROM scratch WHERE x = 1;
SET standard_conforming_strings = on;
SET TIME ZONE 'UTC';
SET SESSION statement_timeout TO 0;
RESET statement_timeout;
SHOW search_path;
SELECT set_config('application_name', 'compat', false), current_setting('application_name');
SET application_name = DEFAULT;
NOTIFY compat_channel, 'hello';
LISTEN compat_channel;
UNLISTEN *;
BEGIN;
LOCK TABLE scratch IN SHARE MODE NOWAIT;
COMMIT;
VACUUM (ANALYZE) scratch;
ANALYZE staging;
ANALYSE staging (name);
REFRESH MATERIALIZED VIEW item_counts;
SELECT n FROM item_counts;
CLUSTER items USING items_pkey;
REINDEX TABLE scratch;
DO $$ BEGIN PERFORM 1; END $$;
DO LANGUAGE plpgsql $do$ BEGIN RAISE NOTICE 'from a DO block'; END $do$;
CALL bump(1);
CHECKPOINT;
DISCARD TEMP;
GRANT SELECT ON items TO app;
REVOKE SELECT ON items FROM app;
CREATE ROLE compat_reader NOLOGIN;
GRANT compat_reader TO app;
REVOKE compat_reader FROM app;
ALTER ROLE compat_reader SET search_path = compat;
DROP ROLE compat_reader;
SET ROLE app;
RESET ROLE;
SET SESSION AUTHORIZATION DEFAULT;
ALTER VIEW item_names RENAME TO item_list;
ALTER FUNCTION add_one(int) STABLE;
ALTER SEQUENCE seq RESTART WITH 1;
ALTER DOMAIN posint ADD CONSTRAINT small CHECK (VALUE < 1000000);
DROP TRIGGER stock_touch ON stock;
DROP RULE scratch_log ON scratch;
TRUNCATE scratch RESTART IDENTITY;
SELECT count(*) FROM items;

-- Clean up
RESET search_path;
DROP SCHEMA compat CASCADE;
