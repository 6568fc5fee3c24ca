"""A remote tracking server: it answers and accepts our credentials, checked once, in seconds.

MLflow's client retries a refused connection for minutes and reports a 401 as a raw REST error;
before any run is created we ask the server once, without retries, and turn each bad setup into one
line that names the fix. Credentials are MLflow's own: MLFLOW_TRACKING_USERNAME/PASSWORD (or
MLFLOW_TRACKING_TOKEN, ~/.mlflow/credentials), read by MLflow's helper, never by the config.
"""

from __future__ import annotations

from lightsweep.errors import LightsweepError
from lightsweep.tracking.uris import describe

START_HINT = "start it with `make server` (scripts/mlflow_server.sh start) or fix MLFLOW_TRACKING_URI"
TIMEOUT_S = 10


def check_server(tracking_uri: str) -> None:
    """Raise LightsweepError unless the server at `tracking_uri` answers and lets us in."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    where = describe(tracking_uri)
    creds = get_default_host_creds(tracking_uri)

    def get(endpoint: str, **params):
        return http_request(
            creds,
            endpoint,
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=TIMEOUT_S,
            raise_on_status=False,
            params=params or None,
        )

    try:
        get("/health")
        response = get("/api/2.0/mlflow/experiments/search", max_results=1)
    except MlflowException as err:
        reason = "connection refused" if "refused" in str(err).lower() else str(err).splitlines()[0][:200]
        raise LightsweepError(f"no MLflow server answers at {where} ({reason}): {START_HINT}") from None
    status = response.status_code
    if status == 401:
        if creds.username or creds.token:
            who = f"user {creds.username!r}" if creds.username else "the token in MLFLOW_TRACKING_TOKEN"
            raise LightsweepError(
                f"the MLflow server at {where} rejected the credentials of {who} (401): check "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        raise LightsweepError(
            f"the MLflow server at {where} requires a login (401): export MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (an account from the server's admin)"
        )
    if status == 403:
        body = " ".join(response.text.split())[:160]
        raise LightsweepError(
            f"the MLflow server at {where} refused the request (403: {body}): use the host name the server "
            "was started for (LIGHTSWEEP_ALLOWED_HOSTS on the server), or ask its admin for permission"
        )
    if status != 200:
        body = " ".join(response.text.split())[:160]
        raise LightsweepError(f"the MLflow server at {where} answered {status} ({body}): check the server's log")
