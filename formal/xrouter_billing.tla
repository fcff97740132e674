---------------------------- MODULE xrouter_billing ----------------------------
(***************************************************************************)
(* REFERENCE ONLY: NOT WIRED INTO THE RUNTIME. XRouter has no billing yet; *)
(* this spec states what a billing adapter must guarantee when one is      *)
(* added, so it can be held to it the way the lifecycle is held to         *)
(* xrouter.tla. No runtime event maps onto these actions today            *)
(* (formal/trace-schema-billing.md).                                       *)
(*                                                                         *)
(* Requests share one prepaid account. Before generation a request         *)
(* reserves Hold credits (its worst case: max_output_tokens); a request    *)
(* that cannot reserve fails before generate. At its terminal stage the    *)
(* reservation is settled exactly once: in done it is charged the usage    *)
(* counted (one credit per output chunk here) and the rest is refunded; in *)
(* failed the reservation is released whole. The balance never goes       *)
(* negative and no credit is created or lost.                              *)
(*                                                                         *)
(* Attempts (xrouter.tla's NextAttempt, a fallback to the next model      *)
(* before any output) are left out: one is enabled only while used[r] = 0 *)
(* and changes no variable here, so it would be a stuttering step. An     *)
(* attempt that failed before output is charged no output; the one        *)
(* reservation covers every attempt of the request.                        *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS
    Requests,   \* the requests (model values)
    Budget,     \* the account's credit at the start
    Hold,       \* credits reserved per request before generation
    MaxTokens   \* output tokens (chunks) a generation may produce

ASSUME /\ IsFiniteSet(Requests) /\ Requests # {}
       /\ Budget \in Nat
       /\ Hold \in Nat /\ Hold >= 1
       /\ MaxTokens \in 1..Hold  \* the reservation covers the worst case

Stages == {"idle", "ingest", "generate", "done", "failed"}
Terminal == {"done", "failed"}

VARIABLES
    stage,        \* stage[r]
    balance,      \* the account's free credit
    reserved,     \* reserved[r]: credit held for r
    used,         \* used[r]: tokens r's generation produced
    charged,      \* charged[r]: credit r was charged at settlement
    settlements   \* settlements[r]: how many times r's reservation was settled or released

vars == <<stage, balance, reserved, used, charged, settlements>>

RECURSIVE SumOf(_, _)
SumOf(f, S) ==
    IF S = {} THEN 0
    ELSE LET x == CHOOSE y \in S : TRUE
         IN f[x] + SumOf(f, S \ {x})

-----------------------------------------------------------------------------

Init ==
    /\ stage = [r \in Requests |-> "idle"]
    /\ balance = Budget
    /\ reserved = [r \in Requests |-> 0]
    /\ used = [r \in Requests |-> 0]
    /\ charged = [r \in Requests |-> 0]
    /\ settlements = [r \in Requests |-> 0]

Receive(r) ==
    /\ stage[r] = "idle"
    /\ stage' = [stage EXCEPT ![r] = "ingest"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

Reserve(r) ==
    /\ stage[r] = "ingest"
    /\ reserved[r] = 0
    /\ balance >= Hold
    /\ balance' = balance - Hold
    /\ reserved' = [reserved EXCEPT ![r] = Hold]
    /\ UNCHANGED <<stage, used, charged, settlements>>

\* Not enough credit: an explicit failure before generate (HTTP 402), nothing held.
RejectNoFunds(r) ==
    /\ stage[r] = "ingest"
    /\ reserved[r] = 0
    /\ balance < Hold
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

\* Bad input, a client gone before generate: fails with or without a reservation.
Reject(r) ==
    /\ stage[r] = "ingest"
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

\* Generation starts only with the reservation held.
Tokenize(r) ==
    /\ stage[r] = "ingest"
    /\ reserved[r] = Hold
    /\ stage' = [stage EXCEPT ![r] = "generate"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

EmitChunk(r) ==
    /\ stage[r] = "generate"
    /\ used[r] < MaxTokens
    /\ used' = [used EXCEPT ![r] = used[r] + 1]
    /\ UNCHANGED <<stage, balance, reserved, charged, settlements>>

Finish(r) ==
    /\ stage[r] = "generate"
    /\ stage' = [stage EXCEPT ![r] = "done"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

ProviderFail(r) ==
    /\ stage[r] = "generate"
    /\ stage' = [stage EXCEPT ![r] = "failed"]
    /\ UNCHANGED <<balance, reserved, used, charged, settlements>>

\* done: charge the usage counted, refund the rest of the reservation.
Settle(r) ==
    /\ stage[r] = "done"
    /\ settlements[r] = 0
    /\ balance' = balance + reserved[r] - used[r]
    /\ charged' = [charged EXCEPT ![r] = used[r]]
    /\ reserved' = [reserved EXCEPT ![r] = 0]
    /\ settlements' = [settlements EXCEPT ![r] = 1]
    /\ UNCHANGED <<stage, used>>

\* failed with a reservation: give it all back.
Release(r) ==
    /\ stage[r] = "failed"
    /\ settlements[r] = 0
    /\ reserved[r] > 0
    /\ balance' = balance + reserved[r]
    /\ reserved' = [reserved EXCEPT ![r] = 0]
    /\ settlements' = [settlements EXCEPT ![r] = 1]
    /\ UNCHANGED <<stage, used, charged>>

\* Not a runtime step: everything is finished and settled, the system stutters.
Terminating ==
    /\ \A r \in Requests : stage[r] \in Terminal /\ reserved[r] = 0
    /\ UNCHANGED vars

Serve(r) ==
    \/ Reserve(r) \/ RejectNoFunds(r) \/ Reject(r) \/ Tokenize(r)
    \/ EmitChunk(r) \/ Finish(r) \/ ProviderFail(r) \/ Settle(r) \/ Release(r)

Next ==
    \/ \E r \in Requests : Receive(r) \/ Serve(r)
    \/ Terminating

Spec == Init /\ [][Next]_vars /\ \A r \in Requests : WF_vars(Serve(r))

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ stage \in [Requests -> Stages]
    /\ balance \in Nat
    /\ reserved \in [Requests -> 0..Hold]
    /\ used \in [Requests -> 0..MaxTokens]
    /\ charged \in [Requests -> 0..MaxTokens]
    /\ settlements \in [Requests -> Nat]

BalanceNeverNegative == balance >= 0

\* No credit is created or lost.
CreditConserved == balance + SumOf(reserved, Requests) + SumOf(charged, Requests) = Budget

ReservedBeforeGenerate == \A r \in Requests : stage[r] = "generate" => reserved[r] = Hold

\* Settled (or released) at most once, only at a terminal stage, and then nothing is held.
SettledOnceAtTerminal ==
    \A r \in Requests :
        /\ settlements[r] <= 1
        /\ settlements[r] = 1 => (stage[r] \in Terminal /\ reserved[r] = 0)

\* A completed request is charged its usage; a failed or unsettled one nothing.
ChargeIsUsage ==
    \A r \in Requests :
        /\ (stage[r] = "done" /\ settlements[r] = 1) => charged[r] = used[r]
        /\ (stage[r] = "failed" \/ settlements[r] = 0) => charged[r] = 0

-----------------------------------------------------------------------------
(* Temporal properties *)

\* A settlement is final.
SettlementFinal ==
    [][\A r \in Requests :
         settlements[r] = 1 => (charged'[r] = charged[r] /\ reserved'[r] = 0)]_vars

\* Every reservation is eventually settled or released ...
ReservationSettled == \A r \in Requests : (reserved[r] > 0) ~> (reserved[r] = 0)

\* ... and every request that reached a terminal stage with one is settled exactly once.
TerminalSettled ==
    \A r \in Requests : (stage[r] \in Terminal /\ reserved[r] > 0) ~> (settlements[r] = 1)

=============================================================================
