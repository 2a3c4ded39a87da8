//! The peers' clients as [`Endpoint`]s: async-nats (core and JetStream),
//! rumqttc (MQTT 3.1.1, QoS 0 and 1) and redis (pub/sub), each on its own
//! current-thread tokio runtime inside the bench's client thread, so the
//! thread-per-client shape of confab's runs is kept: the client's I/O runs
//! only while its thread is in [`Endpoint::step`] or [`Endpoint::pump`],
//! as a sans-IO confab client's does.
//!
//! What counts as the acknowledgement that paces a closed-loop sender:
//!
//! * JetStream: the PubAck (the message is in the stream's file store);
//! * MQTT QoS 1: the PUBACK (the broker took the message);
//! * Redis: PUBLISH's reply (the broker routed it to its subscribers);
//! * NATS core and MQTT QoS 0 have no acknowledgement at all: the sender
//!   subscribes to its own subject or topic, and the broker's echo of its
//!   message is the acknowledgement (the broker has routed it). That costs
//!   the broker one extra delivery per message; confab's acknowledgement is
//!   a small frame.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::endpoint::{Endpoint, Event};
use crate::{BenchError, RATE_MAX_IN_FLIGHT};

/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> BenchError + '_ {
    move |e| BenchError(format!("{what}: {e}"))
}

/// A QoS 1 sender's ids waiting for their MQTT packet identifiers, in send order.
pub(crate) type PendingIds = Arc<Mutex<VecDeque<u32>>>;

/// A peer client's sending half.
pub(crate) enum Publisher {
    /// NATS core: publish; the echo is the acknowledgement.
    Nats(async_nats::Client, String),
    /// JetStream: publish, then the PubAck.
    JetStream(async_nats::jetstream::Context, String),
    /// MQTT: the request channel to the event loop, the QoS, and the ids
    /// waiting for their packet identifier (QoS 1: the event loop maps them).
    Mqtt(rumqttc::AsyncClient, String, rumqttc::QoS, PendingIds),
    /// Redis: PUBLISH on a multiplexed connection.
    Redis(redis::aio::MultiplexedConnection, String),
    /// A client that only receives.
    None,
}

/// A peer client: its runtime, the tasks that feed `rx`, and how it sends.
pub(crate) struct PeerEndpoint {
    pub(crate) rt: Runtime,
    pub(crate) tx: UnboundedSender<Event>,
    rx: UnboundedReceiver<Event>,
    events: VecDeque<Event>,
    publisher: Publisher,
    /// Echo acknowledgement (NATS core, MQTT QoS 0): the send timestamps of
    /// the messages not yet echoed, with their ids.
    echo: Option<VecDeque<([u8; 8], u32)>>,
    next_id: u32,
}

impl PeerEndpoint {
    /// A client with its own runtime; nothing connected yet.
    pub(crate) fn new() -> Result<PeerEndpoint, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(err("tokio runtime"))?;
        let (tx, rx) = unbounded_channel();
        Ok(PeerEndpoint { rt, tx, rx, events: VecDeque::new(), publisher: Publisher::None, echo: None, next_id: 1 })
    }

    /// Sends with `publisher`; `echo`: the acknowledgement is the broker's echo.
    pub(crate) fn sending(mut self, publisher: Publisher, echo: bool) -> PeerEndpoint {
        self.publisher = publisher;
        self.echo = echo.then(VecDeque::new);
        self
    }

    /// Forwards every payload of `stream` as a delivery.
    pub(crate) fn forward<S>(&self, mut stream: S)
    where
        S: futures_util::Stream<Item = Result<Bytes, String>> + Unpin + 'static + Send,
    {
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            while let Some(item) = stream.next().await {
                let event = match item {
                    Ok(payload) => Event::Delivered(payload),
                    Err(e) => Event::Error(e),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed("subscription ended".into()));
        });
    }

    fn take(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.events.push_back(e);
        }
    }
}

impl Endpoint for PeerEndpoint {
    fn send(&mut self, payload: Bytes) -> Result<u32, BenchError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if let Some(echo) = &mut self.echo {
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&payload[..8]);
            echo.push_back((stamp, id));
        }
        let tx = self.tx.clone();
        match &self.publisher {
            Publisher::Nats(client, subject) => {
                self.rt.block_on(client.publish(subject.clone(), payload)).map_err(err("NATS publish"))?;
            }
            Publisher::JetStream(js, subject) => {
                let ack = self.rt.block_on(js.publish(subject.clone(), payload)).map_err(err("JetStream publish"))?;
                self.rt.spawn(async move {
                    let _ = tx.send(match ack.await {
                        Ok(_) => Event::Acked(id),
                        Err(e) => Event::Refused(id, format!("JetStream publish: {e}")),
                    });
                });
            }
            Publisher::Mqtt(client, topic, qos, ids) => {
                if *qos == rumqttc::QoS::AtLeastOnce {
                    ids.lock().unwrap_or_else(PoisonError::into_inner).push_back(id);
                }
                client.try_publish(topic.clone(), *qos, false, payload.to_vec()).map_err(err("MQTT publish"))?;
            }
            Publisher::Redis(con, channel) => {
                let (mut con, channel) = (con.clone(), channel.clone());
                self.rt.spawn(async move {
                    let r: redis::RedisResult<i64> =
                        redis::cmd("PUBLISH").arg(&channel).arg(payload.as_ref()).query_async(&mut con).await;
                    let _ = tx.send(match r {
                        Ok(_) => Event::Acked(id),
                        Err(e) => Event::Refused(id, format!("Redis PUBLISH: {e}")),
                    });
                });
            }
            Publisher::None => return Err(BenchError("this client does not send".into())),
        }
        Ok(id)
    }

    fn pump(&mut self) -> Result<(), BenchError> {
        self.rt.block_on(tokio::task::yield_now());
        self.take();
        Ok(())
    }

    fn step(&mut self, deadline: Instant) -> Result<(), BenchError> {
        let (rt, rx) = (&self.rt, &mut self.rx);
        let first = rt.block_on(async {
            tokio::task::yield_now().await;
            match rx.try_recv() {
                Ok(e) => Some(e),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::timeout_at(deadline.into(), rx.recv()).await.ok().flatten()
                }
                Err(_) => None,
            }
        });
        self.events.extend(first);
        self.take();
        Ok(())
    }

    fn next_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let (Some(echo), Event::Delivered(payload)) = (&mut self.echo, &event)
            && let Some(stamp) = payload.get(..8)
            && let Some(at) = echo.iter().position(|(s, _)| s.as_slice() == stamp)
        {
            // Messages before it that never came back stay unacknowledged.
            let (_, id) = echo.remove(at).unwrap_or(([0; 8], 0));
            echo.drain(..at);
            return Some(Event::Acked(id));
        }
        Some(event)
    }

    fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.rx.is_empty()
    }

    fn close(self: Box<Self>) {
        let me = *self;
        if let Publisher::Nats(client, _) = &me.publisher {
            let _ = me.rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), client.drain()).await });
        }
        me.rt.shutdown_timeout(Duration::from_millis(200));
    }
}

/// NATS: a connected client (TLS when `tls` is given, trusting that configuration's roots).
pub(crate) fn nats_connect(
    ep: &PeerEndpoint,
    url: &str,
    tls: Option<rustls::ClientConfig>,
) -> Result<async_nats::Client, BenchError> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .subscription_capacity(RATE_MAX_IN_FLIGHT * 128)
        .client_capacity(RATE_MAX_IN_FLIGHT * 4);
    if let Some(config) = tls {
        options = options.require_tls(true).tls_client_config(config);
    }
    ep.rt.block_on(options.connect(url)).map_err(err("NATS connect"))
}

/// NATS: subscribes to `subject` and waits until the server has it (a
/// request round trip on the same connection after the SUB).
pub(crate) fn nats_subscribe(ep: &PeerEndpoint, client: &async_nats::Client, subject: &str) -> Result<(), BenchError> {
    let sub = ep.rt.block_on(client.subscribe(subject.to_owned())).map_err(err("NATS subscribe"))?;
    // No responders: the answer proves the SUB before it was processed.
    let _ = ep
        .rt
        .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, client.request("_bench.sync", Bytes::new())).await });
    ep.forward(sub.map(|m| Ok(m.payload)));
    Ok(())
}

/// JetStream: an ordered consumer of `subject` in `stream`, from the next message on.
pub(crate) fn jetstream_subscribe(
    ep: &PeerEndpoint,
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<(), BenchError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let messages = ep
        .rt
        .block_on(async {
            let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let config = OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::New,
                ..OrderedConfig::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        })
        .map_err(err("JetStream consumer"))?;
    ep.forward(messages.map(|m| m.map(|m| m.message.payload).map_err(|e| format!("JetStream consumer: {e}"))));
    Ok(())
}

/// MQTT: connects (TLS when `tls` is given), subscribes to `subscribe`
/// when given, waits for the broker's CONNACK and SUBACK, then runs the
/// event loop as a task; the ids of a QoS 1 sender are mapped to packet
/// identifiers as its publishes go out.
pub(crate) fn mqtt_connect(
    ep: &PeerEndpoint,
    client_id: &str,
    port: u16,
    tls: Option<rustls::ClientConfig>,
    qos: rumqttc::QoS,
    subscribe: Option<&str>,
) -> Result<(rumqttc::AsyncClient, PendingIds), BenchError> {
    use rumqttc::{Event as MqttEvent, Incoming, MqttOptions, Outgoing};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(u16::try_from(RATE_MAX_IN_FLIGHT).unwrap_or(u16::MAX));
    // QoS 1: a persistent session, so the broker keeps what a subscriber has not taken.
    options.set_clean_session(qos == rumqttc::QoS::AtMostOnce);
    if let Some(config) = tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config))));
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, RATE_MAX_IN_FLIGHT * 2);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    eventloop.set_network_options(network);
    if let Some(topic) = subscribe {
        client.try_subscribe(topic, qos).map_err(err("MQTT subscribe"))?;
    }
    let ready = ep.rt.block_on(async {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) if subscribe.is_none() => return Ok(()),
                    Ok(MqttEvent::Incoming(Incoming::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
    });
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(BenchError(format!("MQTT connect: {e}"))),
        Err(_) => return Err(BenchError("MQTT connect: timed out".into())),
    }
    let ids: PendingIds = Arc::default();
    let (tx, waiting) = (ep.tx.clone(), Arc::clone(&ids));
    ep.rt.spawn(async move {
        let mut by_pkid: HashMap<u16, u32> = HashMap::new();
        loop {
            let event = match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Incoming::Publish(p))) => Event::Delivered(p.payload),
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                    if let Some(id) = waiting.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                        by_pkid.insert(pkid, id);
                    }
                    continue;
                }
                Ok(MqttEvent::Incoming(Incoming::PubAck(ack))) => match by_pkid.remove(&ack.pkid) {
                    Some(id) => Event::Acked(id),
                    None => continue,
                },
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Event::Closed(format!("MQTT: {e}")));
                    return;
                }
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    Ok((client, ids))
}

/// Redis: a client whose connections turn Nagle off.
pub(crate) fn redis_client(port: u16) -> Result<redis::Client, BenchError> {
    use redis::IntoConnectionInfo;
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)
        .into_connection_info()
        .map_err(err("Redis address"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(err("Redis client"))
}

/// Redis: subscribes to `channel` (the SUBSCRIBE is confirmed before this returns).
pub(crate) fn redis_subscribe(ep: &PeerEndpoint, client: &redis::Client, channel: &str) -> Result<(), BenchError> {
    let stream = ep
        .rt
        .block_on(async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        })
        .map_err(err("Redis subscribe"))?;
    ep.forward(stream.map(|m| Ok(Bytes::copy_from_slice(m.get_payload_bytes()))));
    Ok(())
}
