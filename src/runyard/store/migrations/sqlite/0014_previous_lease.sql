-- When the lease of the life a registration replaced ended. Every registration is a new life
-- with a token of its own, which takes every attempt of its id; an attempt still under an
-- older token (the replaced process claimed it in the instant before it heard) may run on
-- until that lease has ended and its supervisor fenced it: reaped only that long after.
ALTER TABLE servers ADD COLUMN previous_expires_at REAL;
