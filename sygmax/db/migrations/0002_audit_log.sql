-- Append-only, hash-chained audit log. Rows carry ids, never personal data, so erasing an
-- account leaves its history intact under a pseudonymous id and the chain unbroken.
CREATE TABLE sygmax_audit (
    seq           bigint      PRIMARY KEY,
    at            timestamptz NOT NULL,
    actor_id      uuid,
    action        text        NOT NULL,
    object_type   text        NOT NULL,
    object_id     text,
    workspace_id  uuid,
    source_ip     text,
    request_id    text,
    details       jsonb       NOT NULL DEFAULT '{}',
    prev_hash     bytea       NOT NULL,
    hash          bytea       NOT NULL UNIQUE
);
CREATE INDEX sygmax_audit_actor ON sygmax_audit (actor_id, seq);
CREATE INDEX sygmax_audit_object ON sygmax_audit (object_type, object_id, seq);
CREATE INDEX sygmax_audit_workspace ON sygmax_audit (workspace_id, seq);

-- The application may only append: updates and deletes are refused by the database itself.
-- (Someone with owner rights can still disable this trigger; `sygmax audit verify` then
-- detects the edit through the hash chain.)
CREATE FUNCTION sygmax_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sygmax_audit is append-only';
END $$;
CREATE TRIGGER sygmax_audit_no_update BEFORE UPDATE OR DELETE OR TRUNCATE ON sygmax_audit
    FOR EACH STATEMENT EXECUTE FUNCTION sygmax_audit_append_only();
