------------------------------- MODULE xrouter -------------------------------
(***************************************************************************)
(* The lifecycle of ONE XRouter request:                                   *)
(*                                                                         *)
(*  idle -> ingest -> tokenize -> generate(stream) -> done|failed|cancelled *)
(*                                                                         *)
(* A request is background (`background: true`) or not, chosen when it    *)
(* arrives. A background request is answered at once and its generation   *)
(* is detached from the start (its client leaving is DisconnectLate, as   *)
(* for any request in generate); only a background request can be        *)
(* cancelled (Cancel), only in generate, and its usage is still recorded  *)
(* once.                                                                   *)
(*                                                                         *)
(* An attempt is one upstream call that may answer the request: the first  *)
(* model's (Tokenize starts attempt 1), then each fallback model's         *)
(* (NextAttempt), tried only while no output chunk exists, so the client   *)
(* sees one answer, from the model that served it. MaxAttempts bounds the  *)
(* attempts for TLC, as MaxChunks bounds the chunks; in the runtime the    *)
(* fallback chain does. The transport's own retries inside one provider   *)
(* call (another deployment, a connect retry, a 429/5xx retry) are        *)
(* attempts too, always made before that call yields anything, so before *)
(* any chunk; the runtime does not record them as steps (they happen      *)
(* inside one provider call), so in a trace they are stuttering of        *)
(* generate, and attempts counts only the recorded ones: a NextAttempt is *)
(* a fallback to the next model (reason fallback).                        *)
(*                                                                         *)
(* Every action is named exactly as a value of the runtime's Action enum   *)
(* (src/xrouter/domain/lifecycle.py), so a recorded runtime trace maps     *)
(* onto this spec one step per event (formal/trace-schema.md).             *)
(* Terminating is the only extra disjunct of Next: a stuttering step that  *)
(* keeps TLC from reporting the finished request as a deadlock; it is not  *)
(* a runtime step.                                                         *)
(*                                                                         *)
(* A Python transcription of this module (tests/formal/model.py) is        *)
(* explored exhaustively by the test suite; keep the two in step.          *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets, TLC

CONSTANTS
    MaxChunks,   \* bound on the output chunks of one generation
    MaxAttempts  \* bound on the attempts (upstream calls) of one generation

ASSUME /\ MaxChunks \in Nat /\ MaxChunks >= 1
       /\ MaxAttempts \in Nat /\ MaxAttempts >= 1

Stages == {"idle", "ingest", "tokenize", "generate", "done", "failed", "cancelled"}
Terminal == {"done", "failed", "cancelled"}
BeforeGenerate == {"idle", "ingest", "tokenize"}

\* The refusals of access control (issue 12): checks of ingest, in the runtime's
\* order: the caller's gateway key (401 invalid_api_key: missing, unknown,
\* revoked, expired), the model the key may use (403 model_not_allowed), the
\* key's limits (429 rate_limit_exceeded: requests or tokens per minute, its
\* concurrent requests). Each is an explicit failure before tokenize.
AccessRefusals == {"unauthenticated", "model_not_allowed", "rate_limited"}

\* The outcomes a Reject may carry: "invalid_request" stands for every other
\* refusal (bad input, unknown model, overload, shutting down).
RejectOutcomes == {"invalid_request"} \cup AccessRefusals

\* What the request signalled at its terminal step; the failure outcomes are
\* the runtime's Reason values of the step into "failed".
FailureOutcomes == RejectOutcomes \cup {"provider_error", "timeout", "client_disconnect"}
Outcomes == {"none", "completed", "cancelled"} \cup FailureOutcomes

VARIABLES
    stage,            \* the lifecycle stage
    chunks,           \* output chunks the provider produced
    delivered,        \* of those, the chunks written to the client
    clientConnected,  \* FALSE once the client went away
    enteredGenerate,  \* history: the request reached generate
    outcome,          \* the terminal signal: "completed", "cancelled" or a failure reason
    usageRecords,     \* how many times usage was recorded
    background,       \* the request is a background one (chosen at Receive)
    attempts          \* upstream attempts started: 0 before generate, 1 from Tokenize on

vars == <<stage, chunks, delivered, clientConnected, enteredGenerate, outcome, usageRecords,
          background, attempts>>

-----------------------------------------------------------------------------

Init ==
    /\ stage = "idle"
    /\ chunks = 0
    /\ delivered = 0
    /\ clientConnected = TRUE
    /\ enteredGenerate = FALSE
    /\ outcome = "none"
    /\ usageRecords = 0
    /\ background = FALSE
    /\ attempts = 0

\* idle -> ingest: a request arrived, background or not.
Receive ==
    \E isBackground \in BOOLEAN :
        /\ stage = "idle"
        /\ stage' = "ingest"
        /\ background' = isBackground
        /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, outcome,
                       usageRecords, attempts>>

\* ingest -> tokenize: the request is valid and routed.
Ingest ==
    /\ stage = "ingest"
    /\ stage' = "tokenize"
    /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, outcome, usageRecords,
                   background, attempts>>

\* ingest | tokenize -> failed: bad input, unknown model, overload; and, in
\* ingest only, an access refusal (no key, a model the key may not use, a key
\* over its limit): the runtime checks access before the Ingest step.
Reject ==
    \E reason \in RejectOutcomes :
        /\ stage \in {"ingest", "tokenize"}
        /\ reason \in AccessRefusals => stage = "ingest"
        /\ stage' = "failed"
        /\ outcome' = reason
        /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, usageRecords,
                       background, attempts>>

\* tokenize -> generate: the input is counted, the provider is called.
Tokenize ==
    /\ stage = "tokenize"
    /\ stage' = "generate"
    /\ enteredGenerate' = TRUE
    /\ attempts' = 1
    /\ UNCHANGED <<chunks, delivered, clientConnected, outcome, usageRecords, background>>

\* generate -> generate: the provider produced output; it reaches the client
\* only while the client is there.
EmitChunk ==
    /\ stage = "generate"
    /\ chunks < MaxChunks
    /\ chunks' = chunks + 1
    /\ delivered' = IF clientConnected THEN delivered + 1 ELSE delivered
    /\ UNCHANGED <<stage, clientConnected, enteredGenerate, outcome, usageRecords, background,
                   attempts>>

\* generate -> generate: the attempt in progress failed before any output (429,
\* 5xx, timeout, connection error; a context-length 400 with a larger-context
\* model configured) and the next model of the fallback chain is called. Only
\* while no chunk exists: output of one model never precedes another's. Not a
\* failure of the request: the last attempt's failure is ProviderFail or TimeOut.
NextAttempt ==
    /\ stage = "generate"
    /\ chunks = 0
    /\ attempts < MaxAttempts
    /\ attempts' = attempts + 1
    /\ UNCHANGED <<stage, chunks, delivered, clientConnected, enteredGenerate, outcome,
                   usageRecords, background>>

\* generate -> done, with or without output.
Finish ==
    /\ stage = "generate"
    /\ stage' = "done"
    /\ outcome' = "completed"
    /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, usageRecords, background,
                   attempts>>

\* generate -> failed: the provider failed, before or after its first chunk.
ProviderFail ==
    /\ stage = "generate"
    /\ stage' = "failed"
    /\ outcome' = "provider_error"
    /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, usageRecords, background,
                   attempts>>

\* generate -> failed: the provider sent nothing for too long.
TimeOut ==
    /\ stage = "generate"
    /\ stage' = "failed"
    /\ outcome' = "timeout"
    /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, usageRecords, background,
                   attempts>>

\* ingest | tokenize -> failed: the client went away before generation; the
\* stage in progress fails at once.
DisconnectEarly ==
    /\ stage \in {"ingest", "tokenize"}
    /\ clientConnected
    /\ stage' = "failed"
    /\ clientConnected' = FALSE
    /\ outcome' = "client_disconnect"
    /\ UNCHANGED <<chunks, delivered, enteredGenerate, usageRecords, background, attempts>>

\* generate -> generate: the client went away during generation; only the
\* writes stop, generation goes on to its own terminal stage.
DisconnectLate ==
    /\ stage = "generate"
    /\ clientConnected
    /\ clientConnected' = FALSE
    /\ UNCHANGED <<stage, chunks, delivered, enteredGenerate, outcome, usageRecords, background,
                   attempts>>

\* done | failed -> same: usage is recorded, once, for a request that reached
\* generate (a request refused before generate generated nothing).
RecordUsage ==
    /\ stage \in Terminal
    /\ enteredGenerate
    /\ usageRecords = 0
    /\ usageRecords' = usageRecords + 1
    /\ UNCHANGED <<stage, chunks, delivered, clientConnected, enteredGenerate, outcome, background,
                   attempts>>

\* generate -> cancelled: the client cancelled a background response
\* (POST /v1/responses/{id}/cancel); the usage of what was generated is still
\* recorded (RecordUsage). Not fair: a client may never cancel.
Cancel ==
    /\ stage = "generate"
    /\ background
    /\ stage' = "cancelled"
    /\ outcome' = "cancelled"
    /\ UNCHANGED <<chunks, delivered, clientConnected, enteredGenerate, usageRecords, background,
                   attempts>>

\* Not a runtime step: the finished request stutters (no TLC deadlock).
Terminating ==
    /\ stage \in Terminal
    /\ enteredGenerate => usageRecords = 1
    /\ UNCHANGED vars

Next ==
    \/ Receive
    \/ Ingest
    \/ Reject
    \/ Tokenize
    \/ EmitChunk
    \/ NextAttempt
    \/ Finish
    \/ ProviderFail
    \/ TimeOut
    \/ DisconnectEarly
    \/ DisconnectLate
    \/ RecordUsage
    \/ Cancel
    \/ Terminating

\* The gateway's own steps are weakly fair; the arrival of a request is not.
Admission == Ingest \/ Reject \/ Tokenize \/ DisconnectEarly
Generation == EmitChunk \/ NextAttempt \/ Finish \/ ProviderFail \/ TimeOut \/ DisconnectLate

Fairness ==
    /\ WF_vars(Admission)
    /\ WF_vars(Generation)
    /\ WF_vars(RecordUsage)

Spec == Init /\ [][Next]_vars /\ Fairness

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ stage \in Stages
    /\ chunks \in 0..MaxChunks
    /\ delivered \in 0..MaxChunks
    /\ clientConnected \in BOOLEAN
    /\ enteredGenerate \in BOOLEAN
    /\ outcome \in Outcomes
    /\ usageRecords \in Nat
    /\ background \in BOOLEAN
    /\ attempts \in 0..MaxAttempts

\* response.completed (or the final chat chunk) is signalled in done and only there.
CompletionOnlyInDone == (outcome = "completed") <=> (stage = "done")

\* failed always carries an explicit reason: never a silent failure.
FailureExplicit == (stage = "failed") <=> (outcome \in FailureOutcomes)

\* cancelled is a background response's, cancelled in generate, and only there.
CancelOnlyBackground ==
    /\ (stage = "cancelled") <=> (outcome = "cancelled")
    /\ (stage = "cancelled") => (background /\ enteredGenerate)

\* Nothing is produced or written before generate.
NoOutputBeforeGenerate ==
    /\ stage \in BeforeGenerate => chunks = 0
    /\ chunks > 0 => enteredGenerate
    /\ delivered <= chunks

\* A disconnect before generate fails the request at once; a disconnect in
\* generate never makes it fail (it finishes or fails for its own reasons).
DisconnectSafety ==
    /\ (~clientConnected /\ ~enteredGenerate) => (stage = "failed" /\ outcome = "client_disconnect")
    /\ (outcome = "client_disconnect") => ~enteredGenerate

\* Usage is recorded at most once, only at a terminal stage, only for a
\* request that reached generate.
UsageOnceAtTerminal ==
    /\ usageRecords <= 1
    /\ usageRecords = 1 => (stage \in Terminal /\ enteredGenerate)

\* An attempt is a call of generate: the first starts with it (Tokenize), none
\* before it; and there are at most MaxAttempts of them.
AttemptsCounted ==
    /\ (attempts >= 1) <=> enteredGenerate
    /\ attempts <= MaxAttempts

\* A request refused by access control was refused in ingest: it was never
\* tokenized, never reached the provider (no upstream call, no output), and
\* no usage is recorded for it.
AccessRefusedBeforeTokenize ==
    outcome \in AccessRefusals =>
        /\ stage = "failed"
        /\ ~enteredGenerate
        /\ chunks = 0
        /\ usageRecords = 0

-----------------------------------------------------------------------------
(* Temporal properties *)

\* The access checks are checks of ingest: an access refusal is a step from
\* ingest, never from tokenize or later.
AccessCheckedInIngest ==
    [][(outcome' \in AccessRefusals /\ outcome' # outcome) => stage = "ingest"]_vars

\* Once terminal, only the usage record may still change.
TerminalIsFinal ==
    [][(stage \in Terminal) =>
         UNCHANGED <<stage, chunks, delivered, clientConnected, enteredGenerate, outcome,
                    background, attempts>>]_vars

\* No attempt starts after a chunk was produced, let alone reached the client:
\* a fallback happens before the first byte of the answer, never after.
NoAttemptAfterChunk ==
    [][attempts' > attempts => (chunks = 0 /\ delivered = 0)]_vars

\* Whether a request is background is decided when it arrives, and never changes.
BackgroundChosenAtReceive ==
    [][stage # "idle" => background' = background]_vars

\* After the client went away nothing more is written to it, and it never comes back.
WritesStopOnDisconnect ==
    [][~clientConnected => (delivered' = delivered /\ ~clientConnected')]_vars

\* Every request that enters generate reaches done or failed ...
GenerateTerminates == (stage = "generate") ~> (stage \in Terminal)

\* ... even when its client went away during generate ...
DisconnectedGenerationTerminates ==
    (stage = "generate" /\ ~clientConnected) ~> (stage \in Terminal)

\* ... and its usage gets recorded (exactly once, with UsageOnceAtTerminal).
UsageEventuallyRecorded == (enteredGenerate /\ stage \in Terminal) ~> (usageRecords = 1)

\* Every received request is eventually answered.
RequestTerminates == (stage = "ingest") ~> (stage \in Terminal)

=============================================================================
