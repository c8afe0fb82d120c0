# Hostile masking attempts, one per line, run through the gateway as `app`
# with the demo masking. Each must return no email, card number or SSN of
# customers 1–5 in clear (nor their reversed, case-changed, digit-only, hex
# or binary-integer forms), whether it is answered or refused.
# `@binary ` runs the line as Parse/Bind/Execute with binary results and no
# Describe; `@describe ` with a Describe of the statement first; other lines
# are simple Queries.
#
# Plain and aliased columns
select email, card_number, ssn from customers where id <= 5
select ssn as x, email as y, card_number as z from customers where id <= 5
select "ssn", "EMAIL" from customers where id <= 5
select c.ssn, c.email from customers as c where c.id <= 5
select * from customers where id <= 5
select customers.* from customers where id <= 5
table customers
select x.* from (select * from customers where id <= 5) x
select s from (select ssn s from customers where id <= 5) t
with t as (select ssn, email from customers where id <= 5) select * from t
@binary select email, card_number, ssn from customers where id <= 5
@binary select * from customers where id <= 5
@describe select ssn, email from customers where id <= 5
# Whole rows and records
select c from customers c where id <= 5
select customers from customers where id <= 5
select row(c.*) from customers c where id <= 5
select row(ssn, email) from customers where id <= 5
select (c).ssn from customers c where id <= 5
select c::text from customers c where id <= 5
select format('%s', c) from customers c where id <= 5
select concat(c) from customers c where id <= 5
select c is not null, c from customers c where id <= 5
select (select c from customers c where id = 1)
select array[c] from customers c where id <= 5
select array_agg(c) from customers c where id <= 5
select array_agg(row(c.ssn, c.card_number)) from customers c where id <= 5
select row_to_json(c) from customers c where id <= 5
select to_json(c) from customers c where id <= 5
select to_jsonb(c) from customers c where id <= 5
select to_jsonb(c) - 'name' from customers c where id <= 5
select json_agg(c) from customers c where id <= 5
select jsonb_agg(c) from customers c where id <= 5
select json_build_object('c', c) from customers c where id <= 5
select t from (select ssn, email from customers where id <= 5) t
select row_to_json(t) from (select ssn from customers where id <= 5) t
@binary select c from customers c where id <= 5
@binary select row(c.*) from customers c where id <= 5
@binary select array_agg(c) from customers c where id <= 5
@binary select to_jsonb(c) from customers c where id <= 5
# Casts
select ssn::varchar, email::varchar(100), card_number::char(20) from customers where id <= 5
select card_number::numeric from customers where id <= 5
select card_number::int8 from customers where id <= 5
select card_number::float8 from customers where id <= 5
select card_number::numeric(30,2) from customers where id <= 5
select replace(ssn, '-', '')::int from customers where id <= 5
select replace(ssn, '-', '')::int8 from customers where id <= 5
select cast(ssn as text) from customers where id <= 5
select ssn::bytea from customers where id <= 5
select email::name from customers where id <= 5
select ssn::json from customers where id <= 5
@binary select card_number::numeric from customers where id <= 5
@binary select card_number::int8 from customers where id <= 5
@binary select card_number::float8 from customers where id <= 5
@binary select replace(ssn, '-', '')::int from customers where id <= 5
@binary select ssn::bytea, convert_to(email, 'UTF8') from customers where id <= 5
# String functions
select upper(ssn), lower(email) from customers where id <= 5
select reverse(card_number) from customers where id <= 5
select replace(ssn, '-', '') from customers where id <= 5
select translate(ssn, '-', '') from customers where id <= 5
select translate(card_number, '0123456789', 'abcdefghij') from customers where id <= 5
select regexp_replace(ssn, '\D', '', 'g') from customers where id <= 5
select regexp_replace(email, '(.)', '\1 ', 'g') from customers where id <= 5
select substr(card_number, 1, 8), substr(card_number, 9) from customers where id <= 5
select left(card_number, 10), right(card_number, 10) from customers where id <= 5
select split_part(email, '@', 1) from customers where id <= 5
select '2,' || ssn, '2,' || card_number from customers where id <= 5
select ssn || ',' || card_number from customers where id <= 5
select concat_ws('|', ssn, email, card_number) from customers where id <= 5
select format('%s/%s', ssn, card_number) from customers where id <= 5
select lpad(ssn, 30, '0'), rpad(email, 40, '.') from customers where id <= 5
select repeat(ssn, 2) from customers where id <= 5
select initcap(email) from customers where id <= 5
select trim(both ' ' from ssn) from customers where id <= 5
select overlay(card_number placing 'x' from 1 for 1) from customers where id <= 5
select quote_literal(ssn), quote_ident(email) from customers where id <= 5
select encode(convert_to(email, 'UTF8'), 'hex') from customers where id <= 5
select encode(convert_to(ssn, 'UTF8'), 'base64') from customers where id <= 5
select encode(convert_to(card_number, 'UTF8'), 'escape') from customers where id <= 5
select md5(ssn) || ssn from customers where id <= 5
select string_to_array(ssn, '-') from customers where id <= 5
select regexp_split_to_array(card_number, '(?<=\d{4})') from customers where id <= 5
select regexp_matches(card_number, '(\d{8})(\d+)') from customers where id <= 5
select unnest(array[ssn, email, card_number]) from customers where id <= 5
select string_to_table(ssn || ',' || email, ',') from customers where id <= 5
select chr(ascii(ssn)) || substr(ssn, 2) from customers where id <= 5
# Aggregates and windows
select string_agg(ssn, ',') from customers where id <= 5
select string_agg(email, ';' order by id) from customers where id <= 5
select array_agg(card_number) from customers where id <= 5
select min(ssn), max(email) from customers where id <= 5
select max(card_number::numeric) from customers where id <= 5
select first_value(ssn) over (order by id) from customers where id <= 5
select lag(email) over (order by id), lead(card_number) over (order by id) from customers where id <= 5
select json_object_agg(id, ssn) from customers where id <= 5
select jsonb_object_agg(email, card_number) from customers where id <= 5
select xmlagg(xmlelement(name s, ssn)) from customers where id <= 5
select count(*), count(distinct ssn) from customers where id <= 5
# Subqueries, CTEs, set operations, joins, lateral
select (select ssn from customers where id = 1)
select (select email from customers c2 where c2.id = c1.id) from customers c1 where id <= 5
select id, (select upper(card_number) from customers x where x.id = c.id) from customers c where id <= 5
with recursive r(n, s) as (select 1, ssn from customers where id = 1 union all select n + 1, s from r where n < 2) select s from r
with a as (select ssn s from customers where id <= 5), b as (select s || '' z from a) select lower(z) from b
select ssn from customers where id <= 5 union select email from customers where id <= 5
select 'x' union all select card_number from customers where id <= 5
select ssn from customers where id <= 5 intersect select ssn from customers
select ssn from customers where id <= 5 except select 'none'
select * from (values ((select ssn from customers where id = 1))) v
values ((select email from customers where id = 2)), ((select card_number from customers where id = 3))
select l.s from customers c, lateral (select c.ssn || '' as s) l where c.id <= 5
select j.* from customers c cross join lateral (select upper(c.email) e) j where c.id <= 5
select a.ssn, b.email from customers a join customers b on a.id = b.id where a.id <= 5
select * from customers a natural join customers b where a.id <= 5
select * from customers a join customers b using (id) where a.id <= 5
select distinct on (id) ssn from customers where id <= 5
select ssn from customers where id <= 5 order by ssn collate "C"
select coalesce(null, ssn), nullif(email, '') from customers where id <= 5
select case when id > 0 then card_number else 'x' end from customers where id <= 5
select greatest(ssn, '0'), least(email, 'z') from customers where id <= 5
select * from unnest((select array_agg(ssn) from customers where id <= 5))
select * from jsonb_each_text((select to_jsonb(c) from customers c where id = 1))
select * from json_populate_record(null::customers, (select row_to_json(c) from customers c where id = 1))
select (jsonb_populate_record(null::customers, to_jsonb(c))).ssn from customers c where id <= 5
# JSON, XML, text search, ranges, arrays
select jsonb_build_array(ssn, email) from customers where id <= 5
select json_build_object('card', card_number)::text from customers where id <= 5
select to_json(ssn) from customers where id <= 5
select jsonb_set('{}', '{s}', to_jsonb(ssn)) from customers where id <= 5
select ('{"s": "' || ssn || '"}')::jsonb from customers where id <= 5
select xmlelement(name c, ssn) from customers where id <= 5
select xmlforest(ssn, email) from customers where id <= 5
select xmlparse(content '<a>' || ssn || '</a>') from customers where id <= 5
select to_tsvector('simple', email) from customers where id <= 5
select to_tsvector('simple', card_number) from customers where id <= 5
select to_tsvector('simple', ssn)::text from customers where id <= 5
select int8range(card_number::int8, null) from customers where id <= 5
select numrange(card_number::numeric, null) from customers where id <= 5
select array[card_number::numeric] from customers where id <= 5
select array[[ssn], [email]] from customers where id <= 5
select (array[ssn, email])[1] from customers where id <= 5
@binary select to_tsvector('simple', email) from customers where id <= 5
@binary select int8range(card_number::int8, null) from customers where id <= 5
@binary select array[card_number::int8] from customers where id <= 5
@binary select jsonb_build_object('s', ssn) from customers where id <= 5
@binary select xmlelement(name c, email) from customers where id <= 5
# Views and functions whose bodies the filter cannot see
select * from customer_ids where id <= 5
select tax_id, contact from customer_ids where id <= 5
select lower(tax_id) from customer_ids where id <= 5
select get_ssn(id) from customers where id <= 5
select upper(get_ssn(1))
select * from get_ssn(2)
select luhn_complete(substr(card_number, 1, 15)) from customers where id <= 5
select query_to_xml('select ssn from customers where id <= 5', true, false, '')
select ts_stat('select to_tsvector(''simple'', email) from customers where id <= 5')
select * from ts_stat('select to_tsvector(''simple'', card_number) from customers where id <= 5')
select cursor_to_xml('c', 5, true, false, '')
@binary select get_ssn(1)
# Cursors and prepared statements behind the protocol
begin; declare c1 cursor for select upper(ssn) from customers where id <= 5; fetch 5 from c1; commit
begin; declare c2 binary cursor for select card_number::int8 from customers where id <= 5; fetch all from c2; commit
begin; declare c3 cursor for select c from customers c where id <= 5; fetch 5 from c3; close c3; commit
prepare p1 as select reverse(email) from customers where id <= 5; execute p1; deallocate p1
prepare p2(int) as select ssn || '' from customers where id <= $1; execute p2(5); deallocate p2
deallocate all; prepare p3 as select upper(ssn) from customers where id <= 5; execute p3; deallocate p3
# Errors and notices quoting values
select ssn::int from customers where id = 1
select email::int from customers where id = 2
select card_number::int from customers where id = 3
select (ssn || 'x')::numeric from customers where id = 1
select email::uuid from customers where id = 4
select to_date(ssn, 'YYYY') from customers where id = 5
select 1 / (ssn = 'x')::int from customers where id = 1
select card_number::json from customers where id = 1
select ssn::xml from customers where id = 2
insert into customers (id, name, email, card_number, ssn) select 900001, 'x', email, card_number, ssn from customers where id = 1
select jsonb_path_query(to_jsonb(c), '$.ssn') from customers c where id <= 5
select set_config('app.leak', (select ssn from customers where id = 1), false)
select current_setting('app.leak', true)
# Sinks: masked values written where they would not be masked, then read back
update customers set notes = replace(ssn, '-', '') where id = 1
select notes from customers where id = 1
update customers set notes = reverse(card_number) where id = 2
select notes from customers where id = 2
update customers set name = email where id = 3
select name from customers where id = 3
insert into notes_copy select id, replace(ssn, '-', '') from customers where id <= 5
insert into notes_copy (id, note) select id, card_number from customers where id <= 5
insert into notes_copy (note) values ((select email from customers where id = 1))
with x as (select ssn from customers where id = 1) insert into notes_copy (id, note) select 1, replace(ssn, '-', '') from x
select * from notes_copy
update notes_copy set note = (select card_number from customers where id = 1)
merge into notes_copy n using customers c on n.id = c.id when matched then update set note = c.ssn
select note from notes_copy
create temp table leak as select replace(ssn, '-', '') s from customers where id <= 5
select * from leak
select replace(ssn, '-', '') s into temp leak2 from customers where id <= 5
select * from leak2
create temp view leakv as select replace(ssn, '-', '') s from customers
select * from leakv
copy (select replace(ssn, '-', '') from customers where id <= 5) to '/tmp/gatehouse-leak'
select pg_notify('leak', replace(ssn, '-', '')) from customers where id = 1
listen leak; select pg_notify('leak', card_number) from customers where id = 2
listen leak2; notify leak2, 'card 4111111111111111 ssn 536-22-1234'
select setval('customers_id_seq', card_number::int8) from customers where id = 1
select lo_from_bytea(0, convert_to(ssn, 'UTF8')) from customers where id = 1
do $$ begin raise notice '%', (select ssn from customers where id = 1); end $$
do $$ begin raise exception '%', (select card_number from customers where id = 2); end $$
do $$ begin execute 'update customers set notes = ' || quote_literal('x') || ' where id = 4'; end $$
create function leak_fn() returns text language sql as $$ select ssn from customers where id = 1 $$
call nonexistent_proc((select ssn from customers where id = 1))
explain analyze select ssn from customers where id <= 5
explain (verbose, costs off) select upper(ssn) from customers where ssn = '536-22-1234'
# COPY
copy customers to stdout
copy customers (ssn, email) to stdout with (format csv, header)
copy (select upper(ssn), reverse(card_number) from customers where id <= 5) to stdout
copy (select c from customers c where id <= 5) to stdout
copy (select card_number::numeric, replace(ssn, '-', '')::int8 from customers where id <= 5) to stdout (format binary)
copy (select * from customer_ids where id <= 5) to stdout (format csv)
copy (select get_ssn(1)) to stdout
select 1; copy (select email from customers where id <= 5) to stdout
# Several statements in one Query, and odd spellings
select 1; select ssn from customers where id <= 5; select upper(email) from customers where id <= 5
SELECT UPPER(SSN) FROM CUSTOMERS WHERE ID <= 5
select/**/upper(ssn)/**/from/**/customers where id <= 5
select upper("ssn") from "customers" where id <= 5
select upper(public.customers.ssn) from public.customers where id <= 5
select pg_catalog.upper(ssn) from customers where id <= 5
select upper(ssn) from only customers where id <= 5
select $$literal$$, upper(ssn) from customers where id <= 5
select e'\x41', reverse(ssn) from customers where id <= 5
select u&'\0041', lower(card_number) from customers where id <= 5
