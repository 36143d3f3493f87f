-- The example service's tables (examples/orders/orders.py); --setup-sql runs this once before the first sample.
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    reference varchar(100) NOT NULL UNIQUE,
    customer varchar(100) NOT NULL,
    amount_cents integer NOT NULL
);
CREATE TABLE IF NOT EXISTS order_events (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    kind varchar(20) NOT NULL
);
