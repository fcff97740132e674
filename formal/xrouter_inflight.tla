--------------------------- MODULE xrouter_inflight ---------------------------
(***************************************************************************)
(* N concurrent requests and an in-flight limit per provider pool, with a  *)
(* FIFO waiting queue and leases that expire when their worker dies.       *)
(*                                                                         *)
(* Each request's lifecycle is the one of xrouter.tla, with the stages     *)
(* that do not matter for admission merged (ingest stands for everything   *)
(* before the provider call; the chunk and disconnect steps of generate    *)
(* are left out: they neither take nor release a slot). A request asks its *)
(* provider's pool for a slot when it is received:                         *)
(*   - a free slot and nobody waiting: it takes the slot;                  *)
(*   - otherwise, in a pool whose queue timeout is 0 (fail fast), it is    *)
(*     refused at once with an explicit failure ("overloaded": HTTP 429);  *)
(*   - otherwise it joins the pool's FIFO queue ("waiting"). Only the head *)
(*     of the queue may take a freed slot (no barging by new arrivals).    *)
(*     A waiter leaves the queue with a slot, or with the explicit failure *)
(*     "queue_timeout" (HTTP 429 with Retry-After) when its wait runs out, *)
(*     or with "client_disconnect" when its client goes away.              *)
(* Time is abstracted: the queue timeout may run out at any moment of the  *)
(* wait. QueueingPools are the pools that let requests wait                *)
(* (XR_<NAME>_QUEUE_TIMEOUT_S > 0); the others fail fast (= 0). The .cfg   *)
(* has one pool of each kind, so one run checks both modes side by side.   *)
(*                                                                         *)
(* Leases: a slot, and a place in the queue, is a lease its worker renews  *)
(* while it lives (the heartbeat), so a live request never loses it. A     *)
(* worker may die (Crash) while its request waits or generates (a crash    *)
(* between admission and generate is the same for the pool, and is left    *)
(* out to keep the state space small). The request then stops for good: it *)
(* never reaches a terminal stage by itself (its client sees the           *)
(* connection drop, outside this model). Its lease expires (Expire),       *)
(* freeing the slot or the place in the queue. Until then the dead lease   *)
(* still counts: a pool does not admit over a slot it cannot yet prove     *)
(* free, and a dead head of the queue blocks the ones behind it until it   *)
(* expires.                                                                *)
(*                                                                         *)
(* Gateway keys (issue 12): each request comes with a key, and a key has  *)
(* a limit on its concurrent requests (KeyLimit, the same for every key   *)
(* here). Admission takes a lease of the key first: with none left, the   *)
(* request is refused at once ("rate_limited": HTTP 429                   *)
(* rate_limit_exceeded), before it asks any pool for a slot. The key      *)
(* lease is held through the wait and the generation, released at the     *)
(* terminal stage, and, like a slot, expires when its worker dies. The    *)
(* key check and the pool's admission are one step here (the runtime      *)
(* checks the key in ingest, the pool before the provider call: ingest    *)
(* stands for everything before the provider call). The same heartbeat    *)
(* renews both leases, and they have the same duration: they expire in    *)
(* one step.                                                              *)
(*                                                                         *)
(* The runtime: LocalInflight (adapters/providers/inflight.py, one         *)
(* process, where a crash takes the pool with it, so Crash never happens)  *)
(* and RedisInflight (adapters/redis/inflight.py, shared by every worker   *)
(* and instance). The engine's own limit (EngineSettings.max_inflight) is  *)
(* the fail-fast case with a single pool. Python transcription:            *)
(* tests/formal/inflight_model.py.                                         *)
(*                                                                         *)
(* Attempts (xrouter.tla's NextAttempt, a fallback to the next model) are  *)
(* left out: a request's key lease covers all its attempts (taken at       *)
(* admission, given back at the terminal stage), and each attempt's        *)
(* provider call takes and gives back a slot of its own provider's pool,   *)
(* which for that pool is a request of its own; formal/README.md says why. *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets, TLC

CONSTANTS
    Requests,       \* the requests (model values)
    Providers,      \* the provider pools (model values)
    QueueingPools,  \* the pools that let requests wait (queue timeout > 0)
    Limit,          \* requests a pool admits at once
    Keys,           \* the gateway keys (model values)
    KeyLimit        \* requests a key may have in progress at once

ASSUME /\ IsFiniteSet(Requests) /\ Requests # {}
       /\ IsFiniteSet(Providers) /\ Providers # {}
       /\ QueueingPools \subseteq Providers
       /\ Limit \in Nat /\ Limit >= 1
       /\ IsFiniteSet(Keys) /\ Keys # {}
       /\ KeyLimit \in Nat /\ KeyLimit >= 1

Stages == {"idle", "ingest", "waiting", "generate", "done", "failed"}
Terminal == {"done", "failed"}
FailureOutcomes == {"rate_limited", "overloaded", "queue_timeout", "client_disconnect",
                    "invalid_request", "provider_error"}
Outcomes == {"none", "completed"} \cup FailureOutcomes

VARIABLES
    stage,     \* stage[r]: the lifecycle stage of request r
    route,     \* route[r]: the provider pool r's model routes to
    holds,     \* holds[r]: r holds a slot (a lease) of route[r]'s pool
    queue,     \* queue[p]: the requests waiting for a slot of pool p, oldest first
    crashed,   \* crashed[r]: the worker serving r died
    outcome,   \* outcome[r]: the terminal signal of r
    key,       \* key[r]: the gateway key r comes with
    keyLease   \* keyLease[r]: r holds a lease of key[r]'s concurrency limit

vars == <<stage, route, holds, queue, crashed, outcome, key, keyLease>>

InFlight(p) == Cardinality({r \in Requests : holds[r] /\ route[r] = p})

Queued(r) == \E i \in 1..Len(queue[route[r]]) : queue[route[r]][i] = r

Without(s, r) == SelectSeq(s, LAMBDA x : x # r)

\* Pool p can give a slot to a request that is not waiting: one is free and
\* nobody waits for it.
FreeFor(p) == InFlight(p) < Limit /\ queue[p] = <<>>

\* The leases held on key k's concurrency limit, and whether one is left.
KeyLeases(k) == Cardinality({r \in Requests : keyLease[r] /\ key[r] = k})
KeyFree(k) == KeyLeases(k) < KeyLimit

\* r holds a lease of some kind: a slot, a place in a queue, a key lease.
Leased(r) == holds[r] \/ Queued(r) \/ keyLease[r]

-----------------------------------------------------------------------------

Init ==
    /\ stage = [r \in Requests |-> "idle"]
    /\ route \in [Requests -> Providers]
    /\ holds = [r \in Requests |-> FALSE]
    /\ queue = [p \in Providers |-> <<>>]
    /\ crashed = [r \in Requests |-> FALSE]
    /\ outcome = [r \in Requests |-> "none"]
    /\ key \in [Requests -> Keys]
    /\ keyLease = [r \in Requests |-> FALSE]

\* Arrival and admission are one step: the runtime checks and takes the key's
\* lease, then the slot, or joins the queue, each atomically (no await between
\* check and take; one script in Redis). A key with no lease left takes
\* nothing: the request is refused (RejectRateLimited).
Receive(r) ==
    /\ stage[r] = "idle"
    /\ IF ~KeyFree(key[r])
          THEN /\ stage' = [stage EXCEPT ![r] = "ingest"]
               /\ UNCHANGED <<holds, queue, keyLease>>
          ELSE /\ keyLease' = [keyLease EXCEPT ![r] = TRUE]
               /\ IF FreeFor(route[r]) \/ route[r] \notin QueueingPools
                     THEN /\ stage' = [stage EXCEPT ![r] = "ingest"]
                          /\ holds' = [holds EXCEPT ![r] = FreeFor(route[r])]
                          /\ UNCHANGED queue
                     ELSE /\ stage' = [stage EXCEPT ![r] = "waiting"]
                          /\ queue' = [queue EXCEPT ![route[r]] = Append(@, r)]
                          /\ UNCHANGED holds
    /\ UNCHANGED <<route, crashed, outcome, key>>

\* A request whose key had no lease left fails at once, explicitly.
RejectRateLimited(r) ==
    /\ stage[r] = "ingest"
    /\ ~keyLease[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ outcome' = [outcome EXCEPT ![r] = "rate_limited"]
    /\ UNCHANGED <<route, holds, queue, crashed, key, keyLease>>

\* A request that got no slot in a fail-fast pool fails at once, explicitly,
\* and gives its key's lease back.
RejectOverloaded(r) ==
    /\ stage[r] = "ingest"
    /\ keyLease[r]
    /\ ~holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ outcome' = [outcome EXCEPT ![r] = "overloaded"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, holds, queue, crashed, key>>

\* The head of the queue takes a freed slot.
Admit(r) ==
    /\ stage[r] = "waiting"
    /\ ~crashed[r]
    /\ queue[route[r]] # <<>>
    /\ Head(queue[route[r]]) = r
    /\ InFlight(route[r]) < Limit
    /\ stage' = [stage EXCEPT ![r] = "ingest"]
    /\ holds' = [holds EXCEPT ![r] = TRUE]
    /\ queue' = [queue EXCEPT ![route[r]] = Tail(@)]
    /\ UNCHANGED <<route, crashed, outcome, key, keyLease>>

\* The wait ran out (XR_<NAME>_QUEUE_TIMEOUT_S): an explicit failure, HTTP 429.
QueueTimeout(r) ==
    /\ stage[r] = "waiting"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ outcome' = [outcome EXCEPT ![r] = "queue_timeout"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, holds, crashed, key>>

\* The client went away while waiting: it leaves the queue, explicitly.
LeaveQueue(r) ==
    /\ stage[r] = "waiting"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ outcome' = [outcome EXCEPT ![r] = "client_disconnect"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, holds, crashed, key>>

\* Bad input, unknown model, a client gone before generate: the slot and the
\* key's lease are freed.
Reject(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "invalid_request"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, queue, crashed, key>>

Tokenize(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "generate"]
    /\ UNCHANGED <<route, holds, queue, crashed, outcome, key, keyLease>>

Finish(r) ==
    /\ stage[r] = "generate"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "done"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "completed"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, queue, crashed, key>>

\* ProviderFail and TimeOut of xrouter.tla, merged.
ProviderFail(r) ==
    /\ stage[r] = "generate"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "provider_error"]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<route, queue, crashed, key>>

\* The worker serving r dies while r generates or waits for a slot. Not fair:
\* a worker may never crash.
Crash(r) ==
    /\ ~crashed[r]
    /\ stage[r] \in {"waiting", "generate"}
    /\ crashed' = [crashed EXCEPT ![r] = TRUE]
    /\ UNCHANGED <<stage, route, holds, queue, outcome, key, keyLease>>

\* Nobody renews the dead worker's leases: they expire, and its slot or its
\* place in the queue, and its key's lease, are freed. Only a dead worker's
\* leases expire.
Expire(r) ==
    /\ crashed[r]
    /\ Leased(r)
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ keyLease' = [keyLease EXCEPT ![r] = FALSE]
    /\ UNCHANGED <<stage, route, crashed, outcome, key>>

\* Not a runtime step: every request is finished, or stopped by a crash with its
\* leases gone; the system stutters.
Terminating ==
    /\ \A r \in Requests :
          \/ stage[r] \in Terminal
          \/ crashed[r] /\ ~Leased(r)
    /\ UNCHANGED vars

\* What the gateway does for r on its own (weakly fair): its lifecycle steps, the
\* queue's, and the expiry of its lease once its worker is dead.
Serve(r) ==
    \/ RejectRateLimited(r) \/ RejectOverloaded(r) \/ Admit(r) \/ QueueTimeout(r)
    \/ Reject(r) \/ Tokenize(r) \/ Finish(r) \/ ProviderFail(r) \/ Expire(r)

Next ==
    \/ \E r \in Requests : Receive(r) \/ LeaveQueue(r) \/ Crash(r) \/ Serve(r)
    \/ Terminating

Spec == Init /\ [][Next]_vars /\ \A r \in Requests : WF_vars(Serve(r))

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ stage \in [Requests -> Stages]
    /\ route \in [Requests -> Providers]
    /\ holds \in [Requests -> BOOLEAN]
    /\ queue \in [Providers -> Seq(Requests)]
    /\ crashed \in [Requests -> BOOLEAN]
    /\ outcome \in [Requests -> Outcomes]
    /\ key \in [Requests -> Keys]
    /\ keyLease \in [Requests -> BOOLEAN]

\* The limit is never exceeded, in any pool (dead leases not yet expired count).
LimitRespected == \A p \in Providers : InFlight(p) <= Limit

\* No key ever has more than KeyLimit requests in progress, across every worker
\* and instance (dead leases not yet expired count).
KeyLimitRespected == \A k \in Keys : KeyLeases(k) <= KeyLimit

\* A key lease is held exactly while its request is admitted and unfinished:
\* every live request that waits or generates holds one, a slot is taken only
\* under one, and no finished request keeps one (no leak).
KeyLeasesMatchWork ==
    \A r \in Requests :
        /\ keyLease[r] => stage[r] \in {"ingest", "waiting", "generate"}
        /\ (stage[r] \in {"waiting", "generate"} /\ ~crashed[r]) => keyLease[r]
        /\ holds[r] => keyLease[r]

\* A slot is held exactly while a request is admitted and not finished: nothing
\* generates without one (unless its worker died and the lease expired), no
\* finished or waiting request keeps one (no leak).
SlotsMatchWork ==
    \A r \in Requests :
        /\ (stage[r] = "generate" /\ ~crashed[r]) => holds[r]
        /\ holds[r] => stage[r] \in {"ingest", "generate"}

\* Each pool's queue holds its live waiters (and dead ones whose lease has not
\* expired yet), each once, and only in a pool that lets requests wait.
QueueMatchesWaiters ==
    /\ \A p \in Providers :
          /\ \A i, j \in 1..Len(queue[p]) : i # j => queue[p][i] # queue[p][j]
          /\ queue[p] # <<>> => p \in QueueingPools
    /\ \A r \in Requests :
          /\ Queued(r) => stage[r] = "waiting"
          /\ (stage[r] = "waiting" /\ ~crashed[r]) => Queued(r)

\* Every finished request says how it finished; a refusal is an explicit
\* failure: "overloaded" only in a fail-fast pool, "queue_timeout" only after a wait.
NoSilentDrop ==
    \A r \in Requests :
        /\ (stage[r] = "done") <=> (outcome[r] = "completed")
        /\ (stage[r] = "failed") <=> (outcome[r] \in FailureOutcomes)
        /\ outcome[r] = "overloaded" => route[r] \notin QueueingPools
        /\ outcome[r] \in {"queue_timeout", "client_disconnect"} => route[r] \in QueueingPools

-----------------------------------------------------------------------------
(* Temporal properties *)

\* A request its key admits is refused, or made to wait, only when it cannot
\* have a slot now: its pool is full or others wait.
RefusedOnlyWhenFull ==
    [][\A r \in Requests :
         (stage[r] = "idle" /\ stage'[r] # "idle" /\ keyLease'[r] /\ ~holds'[r])
             => ~FreeFor(route[r])]_vars

\* A request is refused by its key only when the key has no lease left.
KeyRefusedOnlyWhenFull ==
    [][\A r \in Requests :
         (stage[r] = "idle" /\ stage'[r] # "idle" /\ ~keyLease'[r])
             => ~KeyFree(key[r])]_vars

\* FIFO: a request gets a slot only when no earlier waiter of its pool is still
\* waiting (dead waiters count until their lease expires): an arrival takes a
\* slot only from an empty queue, a waiter only from the head.
FifoAdmission ==
    [][\A r \in Requests :
         (~holds[r] /\ holds'[r])
             => (queue[route[r]] = <<>> \/ Head(queue[route[r]]) = r)]_vars

\* A live request's leases never expire: it loses its slot, and its key's
\* lease, only by finishing, and its place in the queue only by getting a slot
\* or failing explicitly.
LiveLeaseKept ==
    [][\A r \in Requests :
         ~crashed[r] =>
             /\ (holds[r] /\ ~holds'[r]) => stage'[r] \in Terminal
             /\ (keyLease[r] /\ ~keyLease'[r]) => stage'[r] \in Terminal
             /\ (Queued(r) /\ ~Queued(r)') => (holds'[r] \/ stage'[r] = "failed")]_vars

\* A request refused by its pool is answered with the overload failure.
RefusalAnswered ==
    \A r \in Requests :
        (stage[r] = "ingest" /\ keyLease[r] /\ ~holds[r] /\ ~crashed[r])
            ~> (outcome[r] = "overloaded")

\* A request refused by its key is answered with the rate limit failure.
RateLimitAnswered ==
    \A r \in Requests :
        (stage[r] = "ingest" /\ ~keyLease[r] /\ ~crashed[r]) ~> (outcome[r] = "rate_limited")

\* A waiting request gets a slot, or fails explicitly (queue timeout, client
\* gone), unless its worker dies.
WaiterAnswered ==
    \A r \in Requests :
        (stage[r] = "waiting") ~> (holds[r] \/ stage[r] = "failed" \/ crashed[r])

\* Every received request whose worker does not die finishes (so its slot comes back).
EveryRequestFinishes ==
    \A r \in Requests :
        (stage[r] \in {"ingest", "waiting"}) ~> (stage[r] \in Terminal \/ crashed[r])

\* A dead worker's slot, or place in the queue, and its key's lease, are
\* eventually freed.
CrashedLeaseFreed ==
    \A r \in Requests : (crashed[r] /\ Leased(r)) ~> ~Leased(r)

\* No key lease leaks: every one is given back, at the terminal stage, or by
\* expiry when its worker died.
KeyLeaseReleased == \A r \in Requests : keyLease[r] ~> ~keyLease[r]

=============================================================================
