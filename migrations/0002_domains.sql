-- 0002: the domains table: what the DNS answers the host received taught
-- about addresses, so that a flow of any time can be joined with the names
-- that were valid at that time (docs/architecture.md, "Domains").
--
-- Why one row per (ip, name) AND validity period, not per (ip, name): an
-- answer extends the period it arrives in (lastSeen, expiresAt move on); an
-- answer that arrives after the period ran out starts a new row. With a single
-- row, a name valid 09:00-09:05 and again 10:00-10:05 would match a 09:30 flow
-- in the as-of join; with periods the join
--   flows f JOIN domains d ON d.ip = f.dstIP AND f.timestamp BETWEEN d.firstSeen AND d.expiresAt
-- is exact. Timestamps are INTEGER nanoseconds since the epoch, UTC; `ip` is
-- printed as everywhere else (dotted quad for IPv4, RFC 5952 for IPv6).
CREATE TABLE domains (
    ip TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The question of the period's first answer: the name itself, or the
    -- name whose CNAME chain led to it.
    question TEXT NOT NULL,
    firstSeen INTEGER NOT NULL,
    lastSeen INTEGER NOT NULL,
    expiresAt INTEGER NOT NULL,
    PRIMARY KEY (ip, name, firstSeen)
);
-- The as-of join looks up an address and a time.
CREATE INDEX domains_by_ip ON domains (ip, expiresAt);
-- Time-range reads (the query layer's `domains` table).
CREATE INDEX domains_by_last_seen ON domains (lastSeen);
