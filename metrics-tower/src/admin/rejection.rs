//! [`AdminRejection`]: the guard's 401 / 403 / 503 (and 500) answers.

use http::{HeaderValue, Response, StatusCode, header};
use metrics_core::AdminCheckError;

/// Why the admin guard refused a request. Answered as a JSON response with
/// the API's error envelope (with the `axum` feature it is also an
/// `IntoResponse`):
///
/// | variant | status | body |
/// |---|---|---|
/// | `Unauthenticated` | 401 | `{"error":"Unauthorized","message":"Authentication required","status_code":401}` |
/// | `NotAdmin` | 403 | `{"error":"Access Denied","message":"Administrator privileges required to access metrics","status_code":403}` |
/// | `CheckFailed` | 503 | `{"error":"Service Unavailable","message":"Unable to verify administrator privileges","status_code":503}` |
///
/// The 503 body does not say why the check failed (that is logged), so
/// backend details never reach clients.
///
/// ```
/// use metrics_tower::admin::AdminRejection;
///
/// assert_eq!(AdminRejection::NotAdmin.status(), 403);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminRejection {
    /// The request carries no [`Identity`](metrics_core::Identity).
    #[error("authentication required")]
    Unauthenticated,
    /// The caller is not an administrator.
    #[error("administrator privileges required")]
    NotAdmin,
    /// The admin check could not decide; access is denied.
    #[error("unable to verify administrator privileges: {0}")]
    CheckFailed(#[source] AdminCheckError),
}

impl AdminRejection {
    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::NotAdmin => StatusCode::FORBIDDEN,
            Self::CheckFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body. Fixed texts, so no serialisation at run time.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            Self::Unauthenticated => {
                r#"{"error":"Unauthorized","message":"Authentication required","status_code":401}"#
            }
            Self::NotAdmin => {
                r#"{"error":"Access Denied","message":"Administrator privileges required to access metrics","status_code":403}"#
            }
            Self::CheckFailed(_) => {
                r#"{"error":"Service Unavailable","message":"Unable to verify administrator privileges","status_code":503}"#
            }
        }
    }

    /// The answer with `body` (which must be [`body`](Self::body)'s text):
    /// the status and the JSON and no-store headers.
    pub(crate) fn response<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Admin answers depend on who asks: keep shared caches out of it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for AdminRejection {
    fn into_response(self) -> axum::response::Response {
        self.response(axum::body::Body::from(self.body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_bodies() {
        for rejection in [
            AdminRejection::Unauthenticated,
            AdminRejection::NotAdmin,
            AdminRejection::CheckFailed(AdminCheckError::MissingToken),
        ] {
            let status = rejection.status().as_u16();
            assert!(
                rejection
                    .body()
                    .ends_with(&format!(r#","status_code":{status}}}"#)),
                "{rejection:?}"
            );
            let response = rejection.response(rejection.body());
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
