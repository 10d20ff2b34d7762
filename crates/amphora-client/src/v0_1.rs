//! The 0.1 API, for amphorae whose controller still speaks it: one haproxy
//! per listener, a listener id in place of the 1.0 load balancer id, and
//! the amphora topology. Reached through [`Client::v0_1`]; same
//! connections, retries and errors as the 1.0 methods.

use amphora_proto::v0_1::{TopologyKind, TopologyRequest, TopologyResponse};
use amphora_proto::{Action, CertificateMd5, Details, Info, ListenerDetail, ListenerStatus, Message, paths};
use bytes::Bytes;
use hyper::Method;

use crate::{Body, Client, ClientError, HaproxyConfig, Stored};

/// The 0.1 routes of one amphora's client.
#[derive(Debug, Clone, Copy)]
pub struct V0_1<'a> {
    pub(crate) client: &'a Client,
}

impl V0_1<'_> {
    /// `GET /v0.1/topology`.
    pub async fn topology(&self) -> Result<TopologyResponse, ClientError> {
        self.client.get_json(paths::v0_1::TOPOLOGY).await
    }

    /// `POST /v0.1/topology`: 200 when nothing changed, 202 when a
    /// transition started.
    pub async fn set_topology(&self, request: &TopologyRequest) -> Result<Message, ClientError> {
        self.client.message(Method::POST, paths::v0_1::TOPOLOGY, self.client.json_body(request)?).await
    }

    /// `GET /v0.1/info`.
    pub async fn info(&self) -> Result<Info, ClientError> {
        self.client.get_json(paths::v0_1::INFO).await
    }

    /// `GET /v0.1/details`, topologies spelled the 0.1 way.
    pub async fn details(&self) -> Result<Details<TopologyKind>, ClientError> {
        self.client.get_json(paths::v0_1::DETAILS).await
    }

    /// `GET /v0.1/listeners`.
    pub async fn listeners(&self) -> Result<Vec<ListenerStatus>, ClientError> {
        self.client.get_json(paths::v0_1::LISTENERS).await
    }

    /// `GET /v0.1/listeners/{listener}`.
    pub async fn listener(&self, listener_id: &str) -> Result<ListenerDetail, ClientError> {
        self.client.get_json(&paths::v0_1::listener(listener_id)).await
    }

    /// `DELETE /v0.1/listeners/{listener}`.
    pub async fn delete_listener(&self, listener_id: &str) -> Result<Message, ClientError> {
        self.client.message(Method::DELETE, &paths::v0_1::listener(listener_id), Body::Empty).await
    }

    /// `PUT /v0.1/listeners/{listener}/{start|stop|reload}`.
    pub async fn act(&self, listener_id: &str, action: Action) -> Result<Message, ClientError> {
        self.client.message(Method::PUT, &paths::v0_1::listener_action(listener_id, action), Body::Empty).await
    }

    /// `PUT /v0.1/listeners/{listener}/haproxy`.
    pub async fn upload_config(&self, listener_id: &str, config: impl Into<Bytes>) -> Result<Stored, ClientError> {
        let path = paths::v0_1::listener_config(listener_id);
        self.client.stored(self.client.call(Method::PUT, &path, Body::Raw(config.into())).await?)
    }

    /// `GET /v0.1/listeners/{listener}/haproxy`.
    pub async fn get_config(&self, listener_id: &str) -> Result<HaproxyConfig, ClientError> {
        self.client.text(&paths::v0_1::listener_config(listener_id)).await
    }

    /// `PUT /v0.1/listeners/{listener}/certificates/{filename}`.
    pub async fn upload_certificate(
        &self,
        listener_id: &str,
        filename: &str,
        pem: impl Into<Bytes>,
    ) -> Result<Stored, ClientError> {
        let path = paths::v0_1::listener_certificate(listener_id, filename);
        self.client.stored(self.client.call(Method::PUT, &path, Body::Raw(pem.into())).await?)
    }

    /// `GET /v0.1/listeners/{listener}/certificates/{filename}`.
    pub async fn certificate_md5(&self, listener_id: &str, filename: &str) -> Result<CertificateMd5, ClientError> {
        self.client.get_json(&paths::v0_1::listener_certificate(listener_id, filename)).await
    }

    /// `DELETE /v0.1/listeners/{listener}/certificates/{filename}`.
    pub async fn delete_certificate(&self, listener_id: &str, filename: &str) -> Result<Message, ClientError> {
        let path = paths::v0_1::listener_certificate(listener_id, filename);
        self.client.message(Method::DELETE, &path, Body::Empty).await
    }

    /// `POST /v0.1/plug/vip/{vip}`: no body; the agent finds the one
    /// unplugged port.
    pub async fn plug_vip(&self, vip: &str) -> Result<Message, ClientError> {
        self.client.message(Method::POST, &paths::v0_1::plug_vip(vip), Body::Empty).await
    }

    /// `POST /v0.1/plug/network`: no body, as for the VIP.
    pub async fn plug_network(&self) -> Result<Message, ClientError> {
        self.client.message(Method::POST, paths::v0_1::PLUG_NETWORK, Body::Empty).await
    }
}
