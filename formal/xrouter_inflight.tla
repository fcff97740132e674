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
(* The runtime: LocalInflight (adapters/providers/inflight.py, one         *)
(* process, where a crash takes the pool with it, so Crash never happens)  *)
(* and RedisInflight (adapters/redis/inflight.py, shared by every worker   *)
(* and instance). The engine's own limit (EngineSettings.max_inflight) is  *)
(* the fail-fast case with a single pool. Python transcription:            *)
(* tests/formal/inflight_model.py.                                         *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets, TLC

CONSTANTS
    Requests,       \* the requests (model values)
    Providers,      \* the provider pools (model values)
    QueueingPools,  \* the pools that let requests wait (queue timeout > 0)
    Limit           \* requests a pool admits at once

ASSUME /\ IsFiniteSet(Requests) /\ Requests # {}
       /\ IsFiniteSet(Providers) /\ Providers # {}
       /\ QueueingPools \subseteq Providers
       /\ Limit \in Nat /\ Limit >= 1

Stages == {"idle", "ingest", "waiting", "generate", "done", "failed"}
Terminal == {"done", "failed"}
FailureOutcomes == {"overloaded", "queue_timeout", "client_disconnect",
                    "invalid_request", "provider_error"}
Outcomes == {"none", "completed"} \cup FailureOutcomes

VARIABLES
    stage,     \* stage[r]: the lifecycle stage of request r
    route,     \* route[r]: the provider pool r's model routes to
    holds,     \* holds[r]: r holds a slot (a lease) of route[r]'s pool
    queue,     \* queue[p]: the requests waiting for a slot of pool p, oldest first
    crashed,   \* crashed[r]: the worker serving r died
    outcome    \* outcome[r]: the terminal signal of r

vars == <<stage, route, holds, queue, crashed, outcome>>

InFlight(p) == Cardinality({r \in Requests : holds[r] /\ route[r] = p})

Queued(r) == \E i \in 1..Len(queue[route[r]]) : queue[route[r]][i] = r

Without(s, r) == SelectSeq(s, LAMBDA x : x # r)

\* Pool p can give a slot to a request that is not waiting: one is free and
\* nobody waits for it.
FreeFor(p) == InFlight(p) < Limit /\ queue[p] = <<>>

-----------------------------------------------------------------------------

Init ==
    /\ stage = [r \in Requests |-> "idle"]
    /\ route \in [Requests -> Providers]
    /\ holds = [r \in Requests |-> FALSE]
    /\ queue = [p \in Providers |-> <<>>]
    /\ crashed = [r \in Requests |-> FALSE]
    /\ outcome = [r \in Requests |-> "none"]

\* Arrival and admission are one step: the runtime checks and takes the slot,
\* or joins the queue, atomically (no await in between; one script in Redis).
Receive(r) ==
    /\ stage[r] = "idle"
    /\ IF FreeFor(route[r]) \/ route[r] \notin QueueingPools
          THEN /\ stage' = [stage EXCEPT ![r] = "ingest"]
               /\ holds' = [holds EXCEPT ![r] = FreeFor(route[r])]
               /\ UNCHANGED queue
          ELSE /\ stage' = [stage EXCEPT ![r] = "waiting"]
               /\ queue' = [queue EXCEPT ![route[r]] = Append(@, r)]
               /\ UNCHANGED holds
    /\ UNCHANGED <<route, crashed, outcome>>

\* A request that got no slot in a fail-fast pool fails at once, explicitly.
RejectOverloaded(r) ==
    /\ stage[r] = "ingest"
    /\ ~holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ outcome' = [outcome EXCEPT ![r] = "overloaded"]
    /\ UNCHANGED <<route, holds, queue, crashed>>

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
    /\ UNCHANGED <<route, crashed, outcome>>

\* The wait ran out (XR_<NAME>_QUEUE_TIMEOUT_S): an explicit failure, HTTP 429.
QueueTimeout(r) ==
    /\ stage[r] = "waiting"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ outcome' = [outcome EXCEPT ![r] = "queue_timeout"]
    /\ UNCHANGED <<route, holds, crashed>>

\* The client went away while waiting: it leaves the queue, explicitly.
LeaveQueue(r) ==
    /\ stage[r] = "waiting"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ outcome' = [outcome EXCEPT ![r] = "client_disconnect"]
    /\ UNCHANGED <<route, holds, crashed>>

\* Bad input, unknown model, a client gone before generate: the slot is freed.
Reject(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "invalid_request"]
    /\ UNCHANGED <<route, queue, crashed>>

Tokenize(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "generate"]
    /\ UNCHANGED <<route, holds, queue, crashed, outcome>>

Finish(r) ==
    /\ stage[r] = "generate"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "done"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "completed"]
    /\ UNCHANGED <<route, queue, crashed>>

\* ProviderFail and TimeOut of xrouter.tla, merged.
ProviderFail(r) ==
    /\ stage[r] = "generate"
    /\ ~crashed[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "provider_error"]
    /\ UNCHANGED <<route, queue, crashed>>

\* The worker serving r dies while r generates or waits for a slot. Not fair:
\* a worker may never crash.
Crash(r) ==
    /\ ~crashed[r]
    /\ stage[r] \in {"waiting", "generate"}
    /\ crashed' = [crashed EXCEPT ![r] = TRUE]
    /\ UNCHANGED <<stage, route, holds, queue, outcome>>

\* Nobody renews the dead worker's lease: it expires, and its slot or its
\* place in the queue is freed. Only a dead worker's lease expires.
Expire(r) ==
    /\ crashed[r]
    /\ holds[r] \/ Queued(r)
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ queue' = [queue EXCEPT ![route[r]] = Without(@, r)]
    /\ UNCHANGED <<stage, route, crashed, outcome>>

\* Not a runtime step: every request is finished, or stopped by a crash with its
\* lease gone; the system stutters.
Terminating ==
    /\ \A r \in Requests :
          \/ stage[r] \in Terminal
          \/ crashed[r] /\ ~holds[r] /\ ~Queued(r)
    /\ UNCHANGED vars

\* What the gateway does for r on its own (weakly fair): its lifecycle steps, the
\* queue's, and the expiry of its lease once its worker is dead.
Serve(r) ==
    \/ RejectOverloaded(r) \/ Admit(r) \/ QueueTimeout(r) \/ Reject(r)
    \/ Tokenize(r) \/ Finish(r) \/ ProviderFail(r) \/ Expire(r)

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

\* The limit is never exceeded, in any pool (dead leases not yet expired count).
LimitRespected == \A p \in Providers : InFlight(p) <= Limit

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

\* A request is refused, or made to wait, only when it cannot have a slot now:
\* its pool is full or others wait.
RefusedOnlyWhenFull ==
    [][\A r \in Requests :
         (stage[r] = "idle" /\ stage'[r] # "idle" /\ ~holds'[r])
             => ~FreeFor(route[r])]_vars

\* FIFO: a request gets a slot only when no earlier waiter of its pool is still
\* waiting (dead waiters count until their lease expires): an arrival takes a
\* slot only from an empty queue, a waiter only from the head.
FifoAdmission ==
    [][\A r \in Requests :
         (~holds[r] /\ holds'[r])
             => (queue[route[r]] = <<>> \/ Head(queue[route[r]]) = r)]_vars

\* A live request's lease never expires: it loses its slot only by finishing,
\* and its place in the queue only by getting a slot or failing explicitly.
LiveLeaseKept ==
    [][\A r \in Requests :
         ~crashed[r] =>
             /\ (holds[r] /\ ~holds'[r]) => stage'[r] \in Terminal
             /\ (Queued(r) /\ ~Queued(r)') => (holds'[r] \/ stage'[r] = "failed")]_vars

\* A refused request is answered with the overload failure.
RefusalAnswered ==
    \A r \in Requests :
        (stage[r] = "ingest" /\ ~holds[r] /\ ~crashed[r]) ~> (outcome[r] = "overloaded")

\* A waiting request gets a slot, or fails explicitly (queue timeout, client
\* gone), unless its worker dies.
WaiterAnswered ==
    \A r \in Requests :
        (stage[r] = "waiting") ~> (holds[r] \/ stage[r] = "failed" \/ crashed[r])

\* Every received request whose worker does not die finishes (so its slot comes back).
EveryRequestFinishes ==
    \A r \in Requests :
        (stage[r] \in {"ingest", "waiting"}) ~> (stage[r] \in Terminal \/ crashed[r])

\* A dead worker's slot, or place in the queue, is eventually freed.
CrashedLeaseFreed ==
    \A r \in Requests : (crashed[r] /\ (holds[r] \/ Queued(r))) ~> ~(holds[r] \/ Queued(r))

=============================================================================
