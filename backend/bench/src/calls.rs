//! The server's calls over real gRPC, each as a closed-loop workload: create (durable), get by
//! id, getByReference, update and a list page of 100, against Environments preloaded with
//! [`crate::preload`]; and the common write of a user, an Agent with 1 KiB of instructions,
//! which the server stores with its default instance in one transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::ListEnvironmentsRequest;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_command_controller_client::EnvironmentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_query_controller_client::EnvironmentQueryControllerClient;
use stigmer_api::ai::stigmer::commons::apiresource::{
    ApiResourceId, ApiResourceMetadata, ApiResourceReference,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::drive::drive;
use crate::resources::{agent, environment, preload_id, preload_slug};
use crate::server::{BenchServer, CpuClock, TreeClock, authorized};
use crate::stats::Summary;

pub const LIST_PAGE: i32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Call {
    Create,
    /// An Agent with 1 KiB of instructions: two resources per call.
    CreateAgent,
    Get,
    GetByReference,
    Update,
    List,
}

impl Call {
    pub const ALL: [Call; 6] = [
        Call::Create,
        Call::CreateAgent,
        Call::Get,
        Call::GetByReference,
        Call::Update,
        Call::List,
    ];

    /// Whether the call's row prints its ratio to a paired gRPC floor (the targets' ratios).
    pub fn compared_with_grpc_floor(self) -> bool {
        matches!(self, Call::Create | Call::Get | Call::GetByReference)
    }

    pub fn label(self) -> &'static str {
        match self {
            Call::Create => "create (durable)",
            Call::CreateAgent => "Agent create, 1 KiB instructions",
            Call::Get => "get by id",
            Call::GetByReference => "getByReference (slug)",
            Call::Update => "update",
            Call::List => "list page of 100",
        }
    }
}

/// What a workload runs against: the server (or replicas) and how many resources were
/// preloaded.
#[derive(Clone)]
pub struct Target {
    /// What every call goes through: one server's connection, or a balancer over replicas.
    pub channel: Channel,
    /// One connection to each server, for `ResourceService/info`: a replica counts only its
    /// own commits, so a balanced channel would mix counters of different servers.
    pub servers: Vec<Channel>,
    pub preloaded: usize,
    /// The servers' CPU time, read around each workload.
    pub cpu: CpuClock,
    /// Whether creates are compared with the SQLite store's batch floor (case 1).
    pub store_floor: bool,
    /// The database server's CPU time, when it is a process of its own (PostgreSQL).
    pub database_cpu: Option<TreeClock>,
    /// The `authorization` header every call carries, in cloud mode.
    pub auth: Option<AsciiMetadataValue>,
}

impl Target {
    /// One server.
    pub fn server(server: &BenchServer, preloaded: usize) -> Result<Self> {
        Ok(Self {
            channel: server.channel.clone(),
            servers: vec![server.channel.clone()],
            preloaded,
            cpu: server.cpu_clock()?,
            store_floor: true,
            database_cpu: None,
            auth: server.auth.clone(),
        })
    }
}

/// Distinguishes the names of creates of different runs against one server.
static RUN: AtomicU64 = AtomicU64::new(0);

/// Runs `call` with `in_flight` workers for `duration`; each worker has its own clone of the
/// channel.
pub async fn measure(
    call: Call,
    target: &Target,
    in_flight: usize,
    duration: Duration,
) -> Result<Summary> {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let cpu_before = target.cpu.used()?;
    let database_before = target.database_cpu.map(|clock| clock.used()).transpose()?;
    let mut summary = drive(in_flight, duration, 1, |worker| {
        let target = target.clone();
        let mut worker_state = Worker::new(worker, run);
        move |sequence| {
            let request = worker_state.next(call, &target, sequence);
            let channel = target.channel.clone();
            let auth = target.auth.clone();
            async move { send(channel, auth, request).await }
        }
    })
    .await?;
    summary.server_cpu = Some(target.cpu.used()?.saturating_sub(cpu_before));
    if let (Some(clock), Some(before)) = (target.database_cpu, database_before) {
        summary.database_cpu = Some(clock.used()?.saturating_sub(before));
    }
    Ok(summary)
}

/// One request to send.
enum Request {
    Create(String),
    CreateAgent(String),
    Get(usize),
    GetByReference(usize),
    Update {
        index: usize,
        sequence: u64,
    },
    /// The worker's list position: the page token to send, replaced by the next one.
    List(Arc<Mutex<String>>),
}

/// Per-worker state: its random stream over the preloaded resources and its list position.
struct Worker {
    index: usize,
    run: u64,
    random: u64,
    page_token: Arc<Mutex<String>>,
}

impl Worker {
    fn new(index: usize, run: u64) -> Self {
        Self {
            index,
            run,
            random: 0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 17) ^ run,
            page_token: Arc::default(),
        }
    }

    fn next(&mut self, call: Call, target: &Target, sequence: u64) -> Request {
        match call {
            Call::Create => {
                Request::Create(format!("bench-r{}-w{}-{sequence}", self.run, self.index))
            }
            Call::CreateAgent => {
                Request::CreateAgent(format!("agent-r{}-w{}-{sequence}", self.run, self.index))
            }
            Call::Get => Request::Get(self.pick(target.preloaded)),
            Call::GetByReference => Request::GetByReference(self.pick(target.preloaded)),
            // Each worker updates a resource of its own, so updates never conflict.
            Call::Update => Request::Update {
                index: self.index % target.preloaded.max(1),
                sequence,
            },
            Call::List => Request::List(Arc::clone(&self.page_token)),
        }
    }

    /// A uniformly random index below `bound` (xorshift64).
    fn pick(&mut self, bound: usize) -> usize {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random % bound.max(1) as u64) as usize
    }
}

async fn send(channel: Channel, auth: Option<AsciiMetadataValue>, request: Request) -> Result<()> {
    let auth = auth.as_ref();
    match request {
        Request::Create(name) => {
            let mut client = EnvironmentCommandControllerClient::new(channel);
            client
                .create(authorized(
                    environment(name, "benchmark create".into()),
                    auth,
                ))
                .await?;
        }
        Request::CreateAgent(name) => {
            let mut client = AgentCommandControllerClient::new(channel);
            client.create(authorized(agent(name), auth)).await?;
        }
        Request::Get(index) => {
            let mut client = EnvironmentQueryControllerClient::new(channel);
            client
                .get(authorized(
                    ApiResourceId {
                        value: preload_id(index),
                        ..Default::default()
                    },
                    auth,
                ))
                .await?;
        }
        Request::GetByReference(index) => {
            let mut client = EnvironmentQueryControllerClient::new(channel);
            client
                .get_by_reference(authorized(
                    ApiResourceReference {
                        slug: preload_slug(index),
                        ..Default::default()
                    },
                    auth,
                ))
                .await?;
        }
        Request::Update { index, sequence } => {
            let mut client = EnvironmentCommandControllerClient::new(channel);
            let mut resource = environment(preload_slug(index), format!("update {sequence}"));
            resource.metadata = Some(ApiResourceMetadata {
                id: preload_id(index),
                name: preload_slug(index),
                ..Default::default()
            });
            client.update(authorized(resource, auth)).await?;
        }
        Request::List(position) => list_next_page(channel, auth, &position).await?,
    }
    Ok(())
}

/// Reads the page after the worker's position and moves it on; after the last page, the next
/// call starts again at the first.
async fn list_next_page(
    channel: Channel,
    auth: Option<&AsciiMetadataValue>,
    position: &Mutex<String>,
) -> Result<()> {
    let page_token = position
        .lock()
        .map_err(|_| anyhow!("list position poisoned"))?
        .clone();
    let mut client = EnvironmentQueryControllerClient::new(channel);
    let page = client
        .list(authorized(
            ListEnvironmentsRequest {
                page_size: LIST_PAGE,
                page_token,
                ..Default::default()
            },
            auth,
        ))
        .await?
        .into_inner();
    *position
        .lock()
        .map_err(|_| anyhow!("list position poisoned"))? = page.next_page_token;
    Ok(())
}
