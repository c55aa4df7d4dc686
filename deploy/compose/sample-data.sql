-- Sample data for the compose stack's database, loaded once when its volume is created.
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10, 2), note text);
INSERT INTO customers (name, email) SELECT 'Customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 10000) g;
INSERT INTO orders (customer_id, amount, note)
SELECT 1 + g % 10000, (g % 500) / 3.0, 'order ' || md5(g::text) FROM generate_series(1, 100000) g;
