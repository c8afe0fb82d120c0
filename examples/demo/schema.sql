-- gatehouse demo database: a small production-like schema holding realistic PII,
-- so that policy and masking have something real to protect.
--
-- Roles: `app` for applications (reads and writes the app tables), `postgres`
-- as superuser. The gateway logs in as these roles on behalf of verified callers.

CREATE ROLE app LOGIN;

CREATE TABLE customers (
    id          bigint PRIMARY KEY,
    name        text   NOT NULL,
    email       text   NOT NULL UNIQUE,
    card_number text   NOT NULL,
    ssn         text   NOT NULL,
    notes       text
);

CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    amount      numeric(10,2) NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Completes a card number prefix with its Luhn check digit.
CREATE FUNCTION luhn_complete(prefix text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT prefix || ((10 - (sum(d) % 10)) % 10)::text
    FROM (
        SELECT CASE WHEN pos % 2 = 1
                    THEN (CASE WHEN digit * 2 > 9 THEN digit * 2 - 9 ELSE digit * 2 END)
                    ELSE digit END AS d
        FROM (
            SELECT substr(reverse(prefix), pos, 1)::int AS digit, pos
            FROM generate_series(1, length(prefix)) AS pos
        ) digits
    ) doubled
$$;

INSERT INTO customers (id, name, email, card_number, ssn, notes)
SELECT i,
       first || ' ' || last,
       lower(first) || '.' || lower(last) || i || '@' || domain,
       luhn_complete(prefix || lpad(((i * 7919) % 1000000000)::text, (CASE WHEN prefix = '37' THEN 14 ELSE 15 END) - length(prefix), '0')),
       lpad((100 + (i * 37) % 565)::text, 3, '0') || '-' ||
           lpad((1 + (i * 13) % 98)::text, 2, '0') || '-' ||
           lpad((1 + (i * 7717) % 9998)::text, 4, '0'),
       CASE i % 5
           WHEN 0 THEN 'prefers email contact'
           WHEN 1 THEN 'called support, callback on +1 415 555 ' || lpad((i % 10000)::text, 4, '0')
           WHEN 2 THEN NULL
           WHEN 3 THEN 'VIP since ' || (2010 + i % 14)
           ELSE 'paid with card ending ' || lpad((i % 10000)::text, 4, '0')
       END
FROM generate_series(1, 5000) AS i,
     LATERAL (SELECT (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Margaret','Ken','Radia','Linus'])[1 + i % 10] AS first,
                     (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Hamilton','Thompson','Perlman','Torvalds'])[1 + (i / 10) % 10] AS last,
                     (ARRAY['example.com','mail.test','corp.example'])[1 + i % 3] AS domain,
                     (ARRAY['4','51','37','6011'])[1 + i % 4] AS prefix) AS gen;

INSERT INTO orders (id, customer_id, amount, created_at)
SELECT i, 1 + (i * 31) % 5000, ((i * 137) % 100000) / 100.0,
       timestamptz '2026-01-01' + (i * interval '17 minutes')
FROM generate_series(1, 20000) AS i;

GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders TO app;
ANALYZE;
