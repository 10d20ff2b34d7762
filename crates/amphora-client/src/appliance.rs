//! The appliance API (`appliance-api.md`): unversioned paths, plain-text
//! answers, an "instance" being a load balancer. Reached through
//! [`Client::appliance`]. Its 404s are plain text and mean "no such
//! instance", so here a 404 is an answer, never "not ready yet".

use amphora_proto::appliance::ApplianceStatus;
use amphora_proto::paths;
use bytes::Bytes;
use hyper::Method;

use crate::{Answer, Body, Client, ClientError};

/// The appliance routes of one amphora's client.
#[derive(Debug, Clone, Copy)]
pub struct Appliance<'a> {
    pub(crate) client: &'a Client,
}

impl Appliance<'_> {
    async fn call(&self, method: Method, path: &str, body: Body) -> Result<Answer, ClientError> {
        self.client.call_with(method, path, body, false).await
    }

    async fn text(&self, method: Method, path: &str, body: Body) -> Result<String, ClientError> {
        let answer = self.client.success(self.call(method, path, body).await?)?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<ApplianceStatus, ClientError> {
        let answer = self.call(Method::GET, paths::appliance::STATUS, Body::Empty).await?;
        self.client.json(answer)
    }

    /// `GET /service_status`: two lines per instance, as text.
    pub async fn service_status(&self) -> Result<String, ClientError> {
        self.text(Method::GET, paths::appliance::SERVICE_STATUS, Body::Empty).await
    }

    /// `GET /instances`: the instance ids.
    pub async fn instances(&self) -> Result<Vec<String>, ClientError> {
        let text = self.text(Method::GET, paths::appliance::INSTANCES, Body::Empty).await?;
        Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// `GET /instances/{instance}`: whether the instance exists.
    pub async fn instance_exists(&self, instance: &str) -> Result<bool, ClientError> {
        let answer = self.call(Method::GET, &paths::appliance::instance(instance), Body::Empty).await?;
        if answer.status == 404 {
            return Ok(false);
        }
        self.client.success(answer).map(|_| true)
    }

    /// `DELETE /instances/{instance}`: the appliance's text answer.
    pub async fn delete_instance(&self, instance: &str) -> Result<String, ClientError> {
        self.text(Method::DELETE, &paths::appliance::instance(instance), Body::Empty).await
    }

    /// `PUT /instances/{instance}/certificates/{filename}`: key, certificate
    /// and chain in one PEM text; a running instance is reloaded to serve
    /// it. A refused certificate is a 409.
    pub async fn upload_certificate(
        &self,
        instance: &str,
        filename: &str,
        pem: impl Into<Bytes>,
    ) -> Result<String, ClientError> {
        let path = paths::appliance::instance_certificate(instance, filename);
        self.text(Method::PUT, &path, Body::Raw(pem.into())).await
    }
}
