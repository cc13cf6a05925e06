//! `Flow` against a model of PostgreSQL's message processing: random valid client message
//! sequences (simple queries, extended batches, pipelines without Sync, Flush, errors, COPY IN
//! and OUT by Query and by Execute, failing COPY data), the model server's answers delivered
//! with the client running ahead by a random amount, and at every point where the server has
//! answered all it was sent, `Flow::idle` must equal the model's own idleness.

use proptest::prelude::*;
use tollgate_wire::flow::Flow;

/// What one client step sends, and how the server will react to it.
#[derive(Debug, Clone)]
enum Step {
    /// Query: ok, error, COPY IN (with n data messages, failing at data k if Some), COPY OUT.
    Query(Outcome),
    /// Parse/Bind/Describe/Execute with outcomes, then Sync or Flush (false) at the end.
    Extended {
        parse_fails: bool,
        exec: Outcome,
        sync: bool,
    },
    /// A bare Sync.
    Sync,
    /// FunctionCall, ok or error.
    FunctionCall(bool),
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    Error,
    /// COPY IN with this many CopyData; the server fails at data k (if Some); CopyFail at the
    /// end if the bool is set.
    CopyIn(u8, Option<u8>, bool),
    CopyOut,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Ok),
        1 => Just(Outcome::Error),
        1 => (0u8..4, proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(n, k, fail)| Outcome::CopyIn(n, k.filter(|k| *k < n), fail)),
        1 => Just(Outcome::CopyOut),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        outcome().prop_map(Step::Query),
        (any::<bool>(), outcome(), prop::bool::weighted(0.8)).prop_map(
            |(parse_fails, exec, sync)| {
                Step::Extended {
                    parse_fails,
                    exec,
                    sync,
                }
            }
        ),
        Just(Step::Sync),
        any::<bool>().prop_map(Step::FunctionCall),
    ]
}

/// One client message with what the server will make of it.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Query(QueryKind),
    Parse(bool),
    Bind,
    Describe,
    Execute(QueryKind),
    Sync,
    Flush,
    FunctionCall(bool),
    /// CopyData; true: the server fails on it.
    CopyData(bool),
    CopyDone,
    CopyFail,
}

#[derive(Debug, Clone, Copy)]
enum QueryKind {
    Ok,
    Error,
    CopyIn,
    CopyOut,
}

impl Msg {
    fn tag(self) -> u8 {
        match self {
            Msg::Query(_) => b'Q',
            Msg::Parse(_) => b'P',
            Msg::Bind => b'B',
            Msg::Describe => b'D',
            Msg::Execute(_) => b'E',
            Msg::Sync => b'S',
            Msg::Flush => b'H',
            Msg::FunctionCall(_) => b'F',
            Msg::CopyData(_) => b'd',
            Msg::CopyDone => b'c',
            Msg::CopyFail => b'f',
        }
    }
}

fn copy_messages(out: &mut Vec<Msg>, n: u8, fail_at: Option<u8>, copy_fail: bool) {
    for i in 0..n {
        out.push(Msg::CopyData(fail_at == Some(i)));
    }
    out.push(if copy_fail {
        Msg::CopyFail
    } else {
        Msg::CopyDone
    });
}

fn kind(o: &Outcome) -> QueryKind {
    match o {
        Outcome::Ok => QueryKind::Ok,
        Outcome::Error => QueryKind::Error,
        Outcome::CopyIn(..) => QueryKind::CopyIn,
        Outcome::CopyOut => QueryKind::CopyOut,
    }
}

/// The client's messages, as libpq, psycopg and pgbench lay them out.
fn messages(steps: &[Step]) -> Vec<Msg> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Query(o) => {
                out.push(Msg::Query(kind(o)));
                if let Outcome::CopyIn(n, k, fail) = o {
                    copy_messages(&mut out, *n, *k, *fail);
                }
            }
            Step::Extended {
                parse_fails,
                exec,
                sync,
            } => {
                out.extend([Msg::Parse(*parse_fails), Msg::Bind, Msg::Describe]);
                out.push(Msg::Execute(kind(exec)));
                match exec {
                    // libpq: Execute, Sync, then the data, CopyDone and another Sync.
                    Outcome::CopyIn(n, k, fail) => {
                        out.push(Msg::Sync);
                        copy_messages(&mut out, *n, *k, *fail);
                        out.push(Msg::Sync);
                    }
                    _ => out.push(if *sync { Msg::Sync } else { Msg::Flush }),
                }
            }
            Step::Sync => out.push(Msg::Sync),
            Step::FunctionCall(ok) => out.push(Msg::FunctionCall(*ok)),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    SkipToSync,
    /// COPY IN; true when a Query started it (else an Execute).
    CopyIn(bool),
}

/// PostgreSQL's processing, one message at a time, as postgres.c and copyfromparse.c do it.
struct Server {
    mode: Mode,
    /// Extended-query messages processed since the last Sync.
    extended_open: bool,
}

impl Server {
    fn process(&mut self, m: Msg, out: &mut Vec<u8>) {
        match self.mode {
            Mode::CopyIn(simple) => {
                match m {
                    Msg::CopyData(false) => {}
                    Msg::Sync | Msg::Flush => {}
                    Msg::CopyDone => {
                        out.push(b'C');
                        self.mode = Mode::Normal;
                        if simple {
                            out.push(b'Z');
                        }
                    }
                    // A bad row, CopyFail, or any other message: the COPY fails.
                    _ => {
                        out.push(b'E');
                        if simple {
                            out.push(b'Z');
                            self.mode = Mode::Normal;
                        } else {
                            self.mode = Mode::SkipToSync;
                        }
                    }
                }
                return;
            }
            Mode::SkipToSync => {
                if let Msg::Sync = m {
                    out.push(b'Z');
                    self.mode = Mode::Normal;
                    self.extended_open = false;
                }
                return;
            }
            Mode::Normal => {}
        }
        // A Query or FunctionCall ends with finish_xact_command, which also commits an
        // implicit transaction left open by extended-query messages before it.
        if matches!(m, Msg::Query(_) | Msg::FunctionCall(_)) {
            self.extended_open = false;
        }
        match m {
            Msg::Query(k) => match k {
                QueryKind::Ok => out.extend(b"TDCZ"),
                QueryKind::Error => out.extend(b"EZ"),
                QueryKind::CopyIn => {
                    out.push(b'G');
                    self.mode = Mode::CopyIn(true);
                }
                QueryKind::CopyOut => out.extend(b"HddcCZ"),
            },
            Msg::FunctionCall(ok) => out.extend(if ok { b"VZ" } else { b"EZ" }),
            Msg::Parse(fails) => {
                self.extended_open = true;
                if fails {
                    out.push(b'E');
                    self.mode = Mode::SkipToSync;
                } else {
                    out.push(b'1');
                }
            }
            Msg::Bind => {
                self.extended_open = true;
                out.push(b'2');
            }
            Msg::Describe => {
                self.extended_open = true;
                out.extend(b"tT");
            }
            Msg::Execute(k) => {
                self.extended_open = true;
                match k {
                    QueryKind::Ok => out.extend(b"DDC"),
                    QueryKind::Error => {
                        out.push(b'E');
                        self.mode = Mode::SkipToSync;
                    }
                    QueryKind::CopyIn => {
                        out.push(b'G');
                        self.mode = Mode::CopyIn(false);
                    }
                    QueryKind::CopyOut => out.extend(b"HdcC"),
                }
            }
            Msg::Sync => {
                out.push(b'Z');
                self.extended_open = false;
            }
            // Flush: nothing to say; copy messages outside COPY are ignored.
            _ => {}
        }
    }

    fn idle(&self) -> bool {
        self.mode == Mode::Normal && !self.extended_open
    }
}

/// 2000 cases in CI; `PROPTEST_CASES=N` for a longer run (as tests/fuzz.rs reads it).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn flow_says_idle_exactly_when_the_server_is(
        steps in prop::collection::vec(step(), 1..12),
        leads in prop::collection::vec(0usize..6, 1..40),
    ) {
        let msgs = messages(&steps);
        let mut server = Server { mode: Mode::Normal, extended_open: false };
        let mut flow = Flow::new();
        let (mut sent, mut processed) = (0usize, 0usize);
        let mut leads = leads.into_iter().cycle();
        while processed < msgs.len() {
            // The client runs ahead by up to `lead` messages, then the server catches up to
            // some point, its answers reaching the proxy as it goes.
            let lead = leads.next().unwrap_or(0);
            let target = (processed + 1 + lead).min(msgs.len());
            while sent < target {
                flow.sent(msgs[sent].tag());
                sent += 1;
            }
            let upto = processed + 1 + lead / 2;
            while processed < upto.min(sent) {
                let mut out = Vec::new();
                server.process(msgs[processed], &mut out);
                for t in out {
                    flow.received(t);
                }
                processed += 1;
            }
            if processed == sent {
                prop_assert!(!flow.lost(), "lost track at {processed} of {msgs:?}");
                prop_assert_eq!(
                    flow.idle(),
                    server.idle(),
                    "after {} of {:?}", processed, msgs
                );
            }
        }
    }
}
