--------------------------- MODULE xrouter_inflight ---------------------------
(***************************************************************************)
(* N concurrent requests and an in-flight limit per provider pool.         *)
(*                                                                         *)
(* Each request's lifecycle is the one of xrouter.tla, with the stages     *)
(* that do not matter for admission merged (ingest stands for ingest and   *)
(* tokenize; the chunk and disconnect steps of generate are left out: they *)
(* neither take nor release a slot). A request takes a slot of its         *)
(* provider's pool when it is received, if one is free, and gives it back  *)
(* at its terminal step; a request received while the pool is full is     *)
(* refused with an explicit failure ("overloaded": HTTP 429), never        *)
(* dropped in silence.                                                     *)
(*                                                                         *)
(* The runtime (ExecutionEngine, EngineSettings.max_inflight) has ONE pool *)
(* shared by every provider: that is this spec with Providers a single     *)
(* value. The .cfg checks two pools, so per-provider limits are covered    *)
(* too. Python transcription: tests/formal/inflight_model.py.              *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS
    Requests,   \* the requests (model values)
    Providers,  \* the provider pools (model values)
    Limit       \* requests a pool admits at once

ASSUME /\ IsFiniteSet(Requests) /\ Requests # {}
       /\ IsFiniteSet(Providers) /\ Providers # {}
       /\ Limit \in Nat /\ Limit >= 1

Stages == {"idle", "ingest", "generate", "done", "failed"}
Terminal == {"done", "failed"}
FailureOutcomes == {"overloaded", "invalid_request", "provider_error"}
Outcomes == {"none", "completed"} \cup FailureOutcomes

VARIABLES
    stage,    \* stage[r]: the lifecycle stage of request r
    route,    \* route[r]: the provider pool r's model routes to
    holds,    \* holds[r]: r holds a slot of route[r]'s pool
    outcome   \* outcome[r]: the terminal signal of r

vars == <<stage, route, holds, outcome>>

InFlight(p) == Cardinality({r \in Requests : holds[r] /\ route[r] = p})

-----------------------------------------------------------------------------

Init ==
    /\ stage = [r \in Requests |-> "idle"]
    /\ route \in [Requests -> Providers]
    /\ holds = [r \in Requests |-> FALSE]
    /\ outcome = [r \in Requests |-> "none"]

\* Arrival and admission are one step: the runtime checks and takes the
\* slot with no await in between.
Receive(r) ==
    /\ stage[r] = "idle"
    /\ stage' = [stage EXCEPT ![r] = "ingest"]
    /\ holds' = [holds EXCEPT ![r] = InFlight(route[r]) < Limit]
    /\ UNCHANGED <<route, outcome>>

\* A request that got no slot fails at once, explicitly.
RejectOverloaded(r) ==
    /\ stage[r] = "ingest"
    /\ ~holds[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ outcome' = [outcome EXCEPT ![r] = "overloaded"]
    /\ UNCHANGED <<route, holds>>

\* Bad input, unknown model, a client gone before generate: the slot is freed.
Reject(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "invalid_request"]
    /\ UNCHANGED route

Tokenize(r) ==
    /\ stage[r] = "ingest"
    /\ holds[r]
    /\ stage' = [stage EXCEPT ![r] = "generate"]
    /\ UNCHANGED <<route, holds, outcome>>

Finish(r) ==
    /\ stage[r] = "generate"
    /\ stage' = [stage EXCEPT ![r] = "done"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "completed"]
    /\ UNCHANGED route

\* ProviderFail and TimeOut of xrouter.tla, merged.
ProviderFail(r) ==
    /\ stage[r] = "generate"
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ holds' = [holds EXCEPT ![r] = FALSE]
    /\ outcome' = [outcome EXCEPT ![r] = "provider_error"]
    /\ UNCHANGED route

\* Not a runtime step: every request is finished, the system stutters.
Terminating ==
    /\ \A r \in Requests : stage[r] \in Terminal
    /\ UNCHANGED vars

Serve(r) == RejectOverloaded(r) \/ Reject(r) \/ Tokenize(r) \/ Finish(r) \/ ProviderFail(r)

Next ==
    \/ \E r \in Requests : Receive(r) \/ Serve(r)
    \/ Terminating

Spec == Init /\ [][Next]_vars /\ \A r \in Requests : WF_vars(Serve(r))

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ stage \in [Requests -> Stages]
    /\ route \in [Requests -> Providers]
    /\ holds \in [Requests -> BOOLEAN]
    /\ outcome \in [Requests -> Outcomes]

\* The limit is never exceeded, in any pool.
LimitRespected == \A p \in Providers : InFlight(p) <= Limit

\* A slot is held exactly while a request is admitted and not finished: nothing
\* generates without one, no finished request keeps one (no leak).
SlotsMatchWork ==
    \A r \in Requests :
        /\ stage[r] = "generate" => holds[r]
        /\ holds[r] => stage[r] \in {"ingest", "generate"}

\* Every finished request says how it finished; a refusal is an explicit failure.
NoSilentDrop ==
    \A r \in Requests :
        /\ (stage[r] = "done") <=> (outcome[r] = "completed")
        /\ (stage[r] = "failed") <=> (outcome[r] \in FailureOutcomes)

-----------------------------------------------------------------------------
(* Temporal properties *)

\* A request is refused only when its pool is full.
RefusedOnlyWhenFull ==
    [][\A r \in Requests :
         (stage[r] = "idle" /\ stage'[r] = "ingest" /\ ~holds'[r])
             => InFlight(route[r]) >= Limit]_vars

\* A refused request is answered with the overload failure.
RefusalAnswered ==
    \A r \in Requests : (stage[r] = "ingest" /\ ~holds[r]) ~> (outcome[r] = "overloaded")

\* Every received request finishes (so its slot comes back).
EveryRequestFinishes ==
    \A r \in Requests : (stage[r] = "ingest") ~> (stage[r] \in Terminal)

=============================================================================
