//! The Kafka tests' broker (`sluice_tests::kafka::Broker`, noida-db) does what issue 17's
//! exactly-once tests rely on, checked with `rdkafka`, the client Sluice uses: a 3-partition
//! topic, idempotent produce, a transaction aborted then one committed, and a `read_committed`
//! reader that sees only the committed records while a `read_uncommitted` one sees all.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, TopicPartitionList};
use sluice_tests::kafka::Broker;

const TIMEOUT: Duration = Duration::from_secs(30);

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("an admin client");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("create {topic}: {e}"));
    }
}

/// Every value of `topic`'s `partitions` partitions from the start, read with `isolation`,
/// until `expected` were read or 10 s of nothing new.
fn read_all(broker: &Broker, topic: &str, partitions: i32, isolation: &str) -> BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("check-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("an offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut values = BTreeSet::new();
    let mut last_new = Instant::now();
    while last_new.elapsed() < Duration::from_secs(5) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                if values.insert(value) {
                    last_new = Instant::now();
                }
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    values
}

#[test]
fn the_broker_hides_aborted_transactions_from_read_committed_readers() {
    let broker = Broker::start();
    create_topic(&broker, "t", 3);

    let idempotent: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    for i in 0..9 {
        let key = format!("k{i}");
        let value = format!("plain-{i}");
        idempotent
            .send(BaseRecord::to("t").key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    idempotent.flush(TIMEOUT).expect("flush");

    let transactional: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", "sluice-test")
        .create()
        .expect("a transactional producer");
    transactional.init_transactions(TIMEOUT).expect("init");
    transactional.begin_transaction().expect("begin");
    for i in 0..3 {
        let value = format!("aborted-{i}");
        transactional
            .send(BaseRecord::<(), _>::to("t").payload(&value).partition(i))
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    transactional.flush(TIMEOUT).expect("flush");
    transactional.abort_transaction(TIMEOUT).expect("abort");
    transactional.begin_transaction().expect("begin");
    for i in 0..3 {
        let value = format!("committed-{i}");
        transactional
            .send(BaseRecord::<(), _>::to("t").payload(&value).partition(i))
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    transactional.commit_transaction(TIMEOUT).expect("commit");

    let committed = read_all(&broker, "t", 3, "read_committed");
    let plain: BTreeSet<String> = (0..9).map(|i| format!("plain-{i}")).collect();
    let done: BTreeSet<String> = (0..3).map(|i| format!("committed-{i}")).collect();
    assert_eq!(
        committed,
        plain.union(&done).cloned().collect(),
        "read_committed sees the plain and committed records only"
    );
    let all = read_all(&broker, "t", 3, "read_uncommitted");
    assert!(
        (0..3).all(|i| all.contains(&format!("aborted-{i}"))),
        "read_uncommitted sees the aborted ones too: {all:?}"
    );
}
