-- tickets_requester is a prefix of tickets_requester_created (0002): every query it served is
-- served by the other, and each new ticket paid a random-key insert into both (BENCHMARKS.md,
-- "Scale", write amplification at a million tickets).
DROP INDEX IF EXISTS tickets_requester;
