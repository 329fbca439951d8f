use super::*;
use crate::protocol::query::Effects;

struct Bench {
    pipeline: Pipeline,
    client: ClientStatements,
    server: ServerStatements,
    out: BytesMut,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            pipeline: Pipeline::default(),
            client: ClientStatements::default(),
            server: ServerStatements::default(),
            out: BytesMut::new(),
        }
    }

    fn push(&mut self, entry: Entry) {
        match entry.answer {
            Answer::Fake(tag) => {
                self.pipeline
                    .push_fake(entry.reply, tag, entry.undo, &mut self.out)
            }
            _ => self.pipeline.push(entry),
        }
    }

    /// The server sends `tag`: returns where it went, and the fakes answered after it.
    fn server(&mut self, tag: u8) -> (String, Vec<u8>) {
        let route = format!("{:?}", self.pipeline.route(tag));
        self.out.clear();
        self.pipeline
            .advance(tag, b"", &mut self.client, &mut self.server, &mut self.out);
        (route, self.fakes())
    }

    fn fakes(&mut self) -> Vec<u8> {
        let tags = self.out.chunks(5).map(|m| m[0]).collect();
        self.out.clear();
        tags
    }
}

fn fake_parse(name: &str) -> Entry {
    Entry {
        reply: Reply::Parse,
        answer: Answer::Fake(b'1'),
        undo: Undo::Unbind(name.into()),
    }
}

#[test]
fn a_spared_parse_is_answered_in_its_turn() {
    let mut b = Bench::new();
    b.push(fake_parse("a"));
    assert_eq!(b.fakes(), b"1", "nothing owed before it: answered at once");
    b.push(Entry::client(Reply::Bind));
    b.push(Entry::client(Reply::Execute));
    b.push(fake_parse("b"));
    b.push(Entry::client(Reply::Bind));
    assert!(b.fakes().is_empty());
    assert_eq!(b.server(b'2'), ("Client".into(), vec![]));
    assert!(!b.pipeline.wants(b'D'), "rows stream through");
    assert_eq!(b.server(b'D').1, b"", "a row ends nothing");
    assert_eq!(b.server(b'C'), ("Client".into(), b"1".to_vec()));
    assert_eq!(b.server(b'2').1, b"");
    assert!(b.pipeline.is_empty());
}

#[test]
fn an_error_skips_to_the_sync_and_undoes_what_was_skipped_newest_first() {
    let mut b = Bench::new();
    let statement = Statement::new(b"SELECT 1\0\0\0", Effects::default());
    b.client.insert("kept", Arc::clone(&statement));
    b.server.insert(&statement.server_name);
    // Bind fails; then a Parse under a new name, a Close of the old name and a Parse
    // reusing it are skipped: the client's names are as before the batch.
    b.push(Entry::client(Reply::Bind));
    b.client.insert("new", Arc::clone(&statement));
    b.push(fake_parse("new"));
    b.client.remove("kept");
    b.push(Entry {
        reply: Reply::Close,
        answer: Answer::Fake(b'3'),
        undo: Undo::Rebind("kept".into(), Arc::clone(&statement)),
    });
    b.client.insert(
        "kept",
        Statement::new(b"SELECT 2\0\0\0", Effects::default()),
    );
    let other = Statement::new(b"SELECT 2\0\0\0", Effects::default());
    b.server.insert(&other.server_name);
    b.push(Entry {
        reply: Reply::Parse,
        answer: Answer::Client,
        undo: Undo::UnbindUnprepare("kept".into(), Arc::clone(&other.server_name)),
    });
    b.push(Entry::client(Reply::Sync));
    assert_eq!(
        b.server(b'E'),
        ("Client".into(), vec![]),
        "no fake answered"
    );
    assert!(!b.pipeline.ignoring(), "the Sync is on its way");
    assert_eq!(b.client.get("kept"), Some(&statement));
    assert!(b.client.get("new").is_none());
    assert!(!b.server.touch(&other.server_name) && b.server.touch(&statement.server_name));
    assert_eq!(b.server(b'Z'), ("Client".into(), vec![]));
    assert!(b.pipeline.is_empty());
}

#[test]
fn after_an_error_with_no_sync_sent_the_server_ignores_until_one_is() {
    let mut b = Bench::new();
    b.push(Entry::client(Reply::Parse));
    b.push(Entry::client(Reply::Describe));
    b.server(b'E');
    assert!(b.pipeline.ignoring() && b.pipeline.is_empty());
    b.push(Entry::client(Reply::Sync));
    assert!(!b.pipeline.ignoring());
    b.server(b'Z');
    assert!(b.pipeline.is_empty());
}

#[test]
fn replies_to_the_brokers_messages_are_dropped_and_errors_routed() {
    let mut b = Bench::new();
    b.push(Entry::broker(Reply::Query, Undo::Nothing));
    assert!(b.pipeline.wants(b'D') && b.pipeline.wants(b'C'));
    assert_eq!(b.server(b'C').0, "Drop");
    assert_eq!(b.server(b'E').0, "Broker");
    assert_eq!(b.server(b'Z').0, "Drop");
    let name: Arc<str> = Arc::from("pgbroker_x");
    b.server.insert(&name);
    b.push(Entry {
        reply: Reply::Parse,
        answer: Answer::OnDemand,
        undo: Undo::Unprepare(Arc::clone(&name)),
    });
    b.push(Entry::client(Reply::Bind));
    b.push(Entry {
        reply: Reply::Describe,
        answer: Answer::Refused(Box::new(StatementRefusal::Duplicate { name: "s1".into() })),
        undo: Undo::Nothing,
    });
    b.push(Entry::client(Reply::Sync));
    assert_eq!(b.server(b'1').0, "Drop");
    assert_eq!(b.server(b'2').0, "Client");
    assert!(b
        .server(b'E')
        .0
        .starts_with("Refused(Duplicate { name: \"s1\""));
    assert_eq!(b.server(b'Z').0, "Client");
    assert!(b.server.touch(&name), "its Parse went through");
    b.push(Entry {
        reply: Reply::Parse,
        answer: Answer::OnDemand,
        undo: Undo::Unprepare(Arc::clone(&name)),
    });
    assert_eq!(b.server(b'E').0, "Client", "why the Bind failed");
    assert!(!b.server.touch(&name), "its Parse failed");
}

#[test]
fn copy_in_eats_the_syncs_behind_it() {
    let mut b = Bench::new();
    b.push(Entry::client(Reply::Execute));
    b.push(Entry::client(Reply::Sync));
    b.push(Entry::client(Reply::Sync));
    b.server(b'G');
    b.push(Entry::client(Reply::Sync));
    b.server(b'C');
    b.server(b'Z');
    assert!(b.pipeline.is_empty());
}

#[test]
fn names_are_uncertain_while_a_closed_batch_that_changed_them_is_unanswered() {
    let mut b = Bench::new();
    b.push(fake_parse("a"));
    assert!(!b.pipeline.uncertain(), "answered at once: nothing pending");
    b.push(Entry::client(Reply::Bind));
    b.push(fake_parse("b"));
    assert!(
        !b.pipeline.uncertain(),
        "the batch is still open: an error skips what follows"
    );
    b.push(Entry::client(Reply::Sync));
    assert!(b.pipeline.uncertain(), "a later batch would not be skipped");
    b.push(Entry::client(Reply::Query));
    b.server(b'2');
    assert!(
        !b.pipeline.uncertain(),
        "the fake was answered after the Bind"
    );
    b.server(b'Z');
    b.server(b'Z');
    assert!(b.pipeline.is_empty() && !b.pipeline.uncertain());
}
