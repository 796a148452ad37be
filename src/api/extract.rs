//! What a handler takes from a request, shared by every resource: the
//! extractors that turn every malformed request into a 4xx [`ApiError`]
//! naming what was wrong ([`ApiJson`], [`OptionalJson`], [`ApiQuery`],
//! [`ApiPath`]), the project a path names ([`open_project`],
//! [`project_service`]), who an API write is recorded as ([`actor`]), and
//! list parameters ([`parse_list`], [`check_limit`]).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::blackboard::{Actor, Blackboard};
use crate::daemon::Daemon;
use crate::registry::{self, ProjectId};
use crate::service::{identity, Notifier, ProjectService};

/// A JSON body; malformed JSON, a wrong content type, missing fields and
/// oversized bodies are 4xx [`ApiError`]s naming what was wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError::from_status(rej.status(), rej.body_text())),
        }
    }
}

/// A JSON body that may be left out entirely (then `T::default()`); when
/// present it is checked like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let has_type = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|rej| ApiError::from_status(rej.status(), rej.body_text()))?;
        if bytes.is_empty() && !has_type {
            return Ok(OptionalJson(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| OptionalJson(v))
    }
}

/// Query parameters; a bad one is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

/// Path parameters; a bad one is a 400 naming it.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

/// The open blackboard of an active project: 400 for a malformed id, 404 for
/// an unknown or archived project, 503 when the project is registered but its
/// database cannot be used.
pub async fn open_project(d: &Daemon, raw: &str) -> Result<Blackboard, ApiError> {
    let id = ProjectId::parse(raw)?;
    if d.projects().get(id.as_str()).is_none() {
        // Created by the CLI since the last tick: pick it up now.
        if let Err(e) = d.projects().refresh(d).await {
            return Err(ApiError::unavailable(e.to_string()));
        }
    }
    match d.projects().get(id.as_str()) {
        Some(slot) => match slot.bb {
            // Removed or replaced under the daemon: refuse rather than let
            // writes vanish into the unlinked file.
            Some(bb) => match bb.file_problem() {
                None => Ok(bb),
                Some(e) => Err(ApiError::unavailable(format!(
                    "project {id} is unavailable: {e}"
                ))),
            },
            None => Err(ApiError::unavailable(format!(
                "project {id} is unavailable: {}",
                slot.error.unwrap_or_default()
            ))),
        },
        None => match registry::active_project(d.home(), id.as_str()) {
            Err(e) => Err(ApiError::not_found(e.to_string())),
            Ok(_) => Err(ApiError::not_found(format!(
                "project {id:?} is not in the registry (see `moziplus project list`)"
            ))),
        },
    }
}

/// The project service of an active project (see [`open_project`]), whose
/// writes wake the daemon after they commit.
pub async fn project_service(d: &Daemon, raw: &str) -> Result<ProjectService, ApiError> {
    let bb = open_project(d, raw).await?;
    let id = ProjectId::parse(raw)?;
    let waker = d.clone();
    Ok(ProjectService::new(
        bb,
        d.home().clone(),
        id,
        Notifier::new(move || waker.wake()),
    ))
}

/// Who an API write is recorded as: `operator:api`, or the `X-Mozi-Actor`
/// header's name (see [`identity::api_operator`]).
pub fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
    let given = headers
        .get("x-mozi-actor")
        .map(|v| v.to_str().unwrap_or(""));
    Ok(identity::api_operator(given)?)
}

/// Parses a comma list of values (`status=pending,working`).
pub(crate) fn parse_list<T: std::str::FromStr<Err = String>>(
    raw: Option<&str>,
) -> Result<Vec<T>, ApiError> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(ApiError::bad_request))
        .collect()
}

/// Checks a `limit` parameter against `1..=max`, defaulting when absent.
pub(crate) fn check_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}
