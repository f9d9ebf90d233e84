//! A minimal Cognito Identity Provider API client: the calls the bootcamp app's front end makes
//! (sign-up, confirmation, sign-in, password recovery), plus the admin call that puts a user in
//! a group. JSON over POST with `X-Amz-Target`, as AWS and the emulator both speak it.

use serde_json::{json, Value};

/// Errors from the Cognito API.
#[derive(Debug)]
pub struct CognitoError(pub String);

impl std::fmt::Display for CognitoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CognitoError {}

/// Tokens from a sign-in.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token: what APIs accept.
    pub access: String,
    /// The ID token: the user's attributes, for the front end.
    pub id: String,
    /// The refresh token.
    pub refresh: String,
}

/// A client for one app client of one pool.
#[derive(Clone)]
pub struct Cognito {
    endpoint: String,
    client_id: String,
    pool_id: String,
    http: reqwest::Client,
}

impl Cognito {
    /// A client for `client_id` of `pool_id` at `endpoint`.
    pub fn new(endpoint: &str, pool_id: &str, client_id: &str) -> Cognito {
        Cognito {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            pool_id: pool_id.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        action: &str,
        body: Value,
    ) -> Result<(Value, reqwest::header::HeaderMap), CognitoError> {
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("AWSCognitoIdentityProviderService.{action}"))
            // The emulator ignores signatures; the admin call wants an Authorization header.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=emulator/20260101/us-east-1/cognito-idp/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| CognitoError(format!("{action}: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| CognitoError(format!("{action}: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(json!({"raw": text}));
        if !status.is_success() {
            return Err(CognitoError(format!("{action}: HTTP {status}: {value}")));
        }
        Ok((value, headers))
    }

    /// SignUp with email as the username and the bootcamp's required attributes.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        name: &str,
        handle: &str,
    ) -> Result<Value, CognitoError> {
        let body = json!({
            "ClientId": self.client_id,
            "Username": email,
            "Password": password,
            "UserAttributes": [
                {"Name": "email", "Value": email},
                {"Name": "name", "Value": name},
                {"Name": "preferred_username", "Value": handle},
            ],
        });
        Ok(self.call("SignUp", body).await?.0)
    }

    /// ConfirmSignUp with the code the user received (the emulator accepts any code).
    pub async fn confirm_sign_up(&self, email: &str, code: &str) -> Result<(), CognitoError> {
        let body = json!({"ClientId": self.client_id, "Username": email, "ConfirmationCode": code});
        self.call("ConfirmSignUp", body).await.map(|_| ())
    }

    /// InitiateAuth with USER_PASSWORD_AUTH.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Tokens, CognitoError> {
        let body = json!({
            "ClientId": self.client_id,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": email, "PASSWORD": password},
        });
        let (value, _) = self.call("InitiateAuth", body).await?;
        let result = &value["AuthenticationResult"];
        let field = |name: &str| {
            result[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| CognitoError(format!("InitiateAuth: no {name} in the answer")))
        };
        Ok(Tokens {
            access: field("AccessToken")?,
            id: field("IdToken")?,
            refresh: field("RefreshToken")?,
        })
    }

    /// GlobalSignOut with the user's own access token (Amplify's `signOut({ global: true })`):
    /// every token of every session of the user is revoked.
    pub async fn global_sign_out(&self, access_token: &str) -> Result<(), CognitoError> {
        let body = json!({ "AccessToken": access_token });
        self.call("GlobalSignOut", body).await.map(|_| ())
    }

    /// AdminUserGlobalSignOut: an administrator signs a user out everywhere.
    pub async fn admin_global_sign_out(&self, email: &str) -> Result<(), CognitoError> {
        let body = json!({ "UserPoolId": self.pool_id, "Username": email });
        self.call("AdminUserGlobalSignOut", body).await.map(|_| ())
    }

    /// ForgotPassword; returns the confirmation code when the emulator reveals it (its
    /// `x-moto-forgot-password-confirmation-code` header), as a user would read it from mail.
    pub async fn forgot_password(&self, email: &str) -> Result<Option<String>, CognitoError> {
        let body = json!({"ClientId": self.client_id, "Username": email});
        let (_, headers) = self.call("ForgotPassword", body).await?;
        Ok(headers
            .get("x-moto-forgot-password-confirmation-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// ConfirmForgotPassword with the code and the new password.
    pub async fn confirm_forgot_password(
        &self,
        email: &str,
        code: &str,
        password: &str,
    ) -> Result<(), CognitoError> {
        let body = json!({
            "ClientId": self.client_id,
            "Username": email,
            "ConfirmationCode": code,
            "Password": password,
        });
        self.call("ConfirmForgotPassword", body).await.map(|_| ())
    }

    /// AdminAddUserToGroup (an administrator's call, not the app's).
    pub async fn add_to_group(&self, email: &str, group: &str) -> Result<(), CognitoError> {
        let body = json!({"UserPoolId": self.pool_id, "Username": email, "GroupName": group});
        self.call("AdminAddUserToGroup", body).await.map(|_| ())
    }
}
