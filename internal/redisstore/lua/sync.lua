#!lua flags=allow-oom
-- This script is a strict write's barrier, run on the write's connection
-- before WAIT: WAIT counts the replicas that have this connection's last
-- write, and a script that changed nothing (a checkout repeated after an
-- unknown outcome, which finds the order) wrote nothing, so that WAIT
-- alone would confirm at once what another connection wrote and the
-- replicas may not have yet. The barrier always writes, and Redis
-- replicates its writes in the order it applies them: once the replicas
-- have the barrier, they have everything before it. (Tried on Redis 7.0
-- with a replica stopped by SIGSTOP after a SET on one connection: on a
-- fresh connection, GET then WAIT 1 answered 1 at once, SET then WAIT 1
-- answered 0.) allow-oom: it must run in a full Redis, as completions do.
redis.call('SET', KEYS[1], '1')
return 1
