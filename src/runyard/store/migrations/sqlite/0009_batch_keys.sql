-- A batch's Idempotency-Key: a batch sent again under the key it was made with is answered
-- with the batch it made, not made twice. NULLs are distinct: keyless batches never conflict.
ALTER TABLE batches ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX batches_by_key ON batches (idempotency_key);
