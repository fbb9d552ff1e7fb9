//! The one tower service every client call goes through, whichever way it travels: a tonic
//! channel to a server, or the in-process server's own service stack. Generated tonic clients
//! take it as their transport (`AgentCommandControllerClient::new(client.transport())`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
#[cfg(feature = "in-process")]
use stigmer_grpc::InProcessService;
use tonic::body::Body;
use tonic::transport::Channel;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
enum Route {
    Remote(Channel),
    #[cfg(feature = "in-process")]
    InProcess(InProcessService),
}

/// A cloneable gRPC transport that adds the caller's credentials and org to every call.
#[derive(Clone)]
pub struct Transport {
    route: Route,
    authorization: Option<HeaderValue>,
    org: Option<HeaderValue>,
}

impl Transport {
    pub(crate) fn remote(channel: Channel) -> Self {
        Self {
            route: Route::Remote(channel),
            authorization: None,
            org: None,
        }
    }

    #[cfg(feature = "in-process")]
    pub(crate) fn in_process(service: InProcessService) -> Self {
        Self {
            route: Route::InProcess(service),
            authorization: None,
            org: None,
        }
    }

    pub(crate) fn with_token(mut self, token: Option<HeaderValue>) -> Self {
        self.authorization = token;
        self
    }

    pub(crate) fn with_org(mut self, org: Option<HeaderValue>) -> Self {
        self.org = org;
        self
    }

    /// Whether calls stay inside this process.
    pub fn is_in_process(&self) -> bool {
        match self.route {
            Route::Remote(_) => false,
            #[cfg(feature = "in-process")]
            Route::InProcess(_) => true,
        }
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.route {
            Route::Remote(channel) => channel.poll_ready(cx).map_err(Into::into),
            #[cfg(feature = "in-process")]
            Route::InProcess(service) => {
                Service::<http::Request<Body>>::poll_ready(service, cx).map_err(Into::into)
            }
        }
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let headers = request.headers_mut();
        if let Some(token) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, token.clone());
        }
        if let Some(org) = &self.org {
            headers.insert(stigmer_core::ORG_HEADER, org.clone());
        }
        match &mut self.route {
            Route::Remote(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            #[cfg(feature = "in-process")]
            Route::InProcess(service) => {
                let call = service.call(request);
                Box::pin(async move {
                    let response = call.await.map_err(|never| match never {})?;
                    Ok(response.map(Body::new))
                })
            }
        }
    }
}
