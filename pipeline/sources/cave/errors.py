"""The CAVE source's one error policy: what each client exception means, said once for every service.

Every call a service makes to caveclient, cloud-volume or requests runs inside `guard`, which turns what the
clients raise into the pipeline's error types (core.errors):
- the first contact of a source object with a server that cannot be reached (connection refused, DNS
  failure, connect timeout) -> UserError naming the URL and what to check;
- once a server has been reached, timeouts, dropped connections and HTTP 5xx / 408 / 429 -> TransientSourceError;
- HTTP 401/403 (or a missing token) -> UserError saying a CAVE token is needed (never the token), or what the 403
  is instead: terms of service not accepted, a public table's time cap, a user without access;
- other HTTP 4xx -> UserError naming the URL (wrong datastack, table or version in the config);
- a login page where JSON was due, a redirect to one -> UserError saying the token is missing or not valid.

The policy reads three things of the session that uses it (session.py): the species' config, whether a server of
it was reached already, and the token (only to black it out of a message).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from config.schema import SpeciesConfig
from core.errors import SampleError, TransientSourceError, UserError
from pipeline.sources import adaptive
from pipeline.sources import budget as budgets

TOKEN_ENV = "CAVE_TOKEN"


def missing_tos(resp: requests.Response | None) -> str | None:
    """The terms-of-service form's URL of a middle_auth `missing_tos` 403 (the JSON caveclient base.py reads)."""
    if resp is None or resp.status_code != 403:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") != "missing_tos":
        return None
    return str((body.get("data") or {}).get("tos_form_url") or "the datastack's terms-of-service page")


class ErrorPolicy:
    """Client exceptions as the pipeline's errors (see the module's docstring). A subclass (the session) holds
    `cfg` and `reached` and says which token to hide (`client_token`)."""

    cfg: SpeciesConfig
    reached: bool  # a server was reached: from then on connection errors are transient, not a wrong config

    def client_token(self) -> str | None:
        raise NotImplementedError

    @property
    def config_file(self) -> str:
        return f"config/{self.cfg.species}.yaml"

    def redact(self, text: str) -> str:
        token = self.client_token()
        return text.replace(token, "***") if token else text

    def auth_error(self, url: str) -> UserError:
        from caveclient.auth import server_token_filename

        server_file = server_token_filename(self.cfg.server_address or url).replace(str(Path.home()), "~", 1)
        return UserError(
            f"{url} refused access (HTTP 401/403): a CAVE token with access to datastack "
            f"'{self.cfg.datastack}' is needed; set the {TOKEN_ENV} environment variable or put it in "
            f"{server_file} (caveclient reads it before ~/.cloudvolume/secrets/cave-secret.json, which may hold "
            "another server's token: leave that one as it is)"
        )

    def access_error(self, resp: requests.Response | None, url: str) -> UserError:
        """A 401 / 403 as what it is: terms of service not accepted (middle_auth's `missing_tos`), a public
        table's time cap (PyChunkedGraph remap_public: "root_id not valid at timestamp"), else the token."""
        text = resp.text if resp is not None else ""
        tos = missing_tos(resp)
        if tos is not None:
            return UserError(
                f"datastack '{self.cfg.datastack}': the token's user has not accepted its terms of service "
                f"({url.split('?')[0]} answered 403 missing_tos); accept them at {tos} signed in as that user, "
                "then rerun"
            )
        if "not valid at timestamp" in text:
            return UserError(
                f"{url.split('?')[0]} answered 401 'root_id not valid at timestamp': datastack "
                f"'{self.cfg.datastack}''s segmentation is a public table whose time is capped at its release, "
                f"and this build reads it at a later time; pin materialization_version (or as_of) in "
                f"{self.config_file} to the public release or earlier"
            )
        if resp is not None and resp.status_code == 403:
            return UserError(
                f"{url.split('?')[0]} refused access (HTTP 403): the CAVE token's user has no access to datastack "
                f"'{self.cfg.datastack}'; ask its administrators for access, or set {TOKEN_ENV} to a token that has it"
            )
        return self.auth_error(url)

    def unreachable(self, url: str, exc: BaseException, key: str = "server_address") -> UserError:
        return UserError(f"could not reach {url} ({type(exc).__name__}); check network or {key} in {self.config_file}")

    def token_not_valid(self, what: str) -> str:
        """The end of every message of a login page met instead of an answer: the token is the cause."""
        return (
            f"{what}the CAVE token is missing or not valid for datastack '{self.cfg.datastack}'; set {TOKEN_ENV} or "
            "caveclient's secret file to a valid token of that server"
        )

    @contextmanager
    def guard(self, what: str, url: str) -> Iterator[None]:
        """Translate client exceptions into the pipeline's error types."""
        from caveclient.base import AuthException, ServerIncompatibilityError
        from cloudvolume import exceptions as cv_exc

        try:
            yield
        except (UserError, TransientSourceError, SampleError):
            raise
        except requests.HTTPError as exc:
            resp = exc.response
            status = resp.status_code if resp is not None else 0
            where = resp.url if resp is not None and resp.url else url
            if status in (401, 403):
                raise self.access_error(resp, where) from None
            if status >= 500 or status in (408, 429):
                message = adaptive.server_message(resp)
                raise TransientSourceError(
                    f"{what}: HTTP {status} from {where[:300]}" + (f" ({self.redact(message)})" if message else "")
                ) from None
            body = self.redact(resp.text[:300]) if resp is not None else ""
            raise UserError(
                f"{what}: HTTP {status} from {where[:300]} ({body.strip()}); check datastack, tables and "
                f"versions in {self.config_file}"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            where = getattr(getattr(exc, "request", None), "url", None) or url
            if not self.reached:
                raise self.unreachable(where, exc) from None
            raise TransientSourceError(f"{what}: {type(exc).__name__} talking to {where[:300]}") from None
        except requests.exceptions.JSONDecodeError:  # HTML where JSON was due: a login page (a client constructor's
            # requests run before this source can hook their session; middle_auth_client redirects them there)
            raise UserError(self.token_not_valid(
                f"{what}: {url} answered a page that is not JSON, most likely a login page (middle_auth_client "
                "redirects a request without a valid token): "
            )) from None  # fmt: skip
        except budgets.HostDown as exc:  # a read outside the adaptive layer (cloud-files) met the host's outage
            raise TransientSourceError(f"{what}: {exc}") from None
        except AuthException:  # caveclient's reading of a redirect (middle_auth_client's answer to a bad token)
            raise UserError(self.token_not_valid(f"{what}: {url} redirected to a login page: ")) from None
        except cv_exc.AuthenticationError:
            raise self.auth_error(url) from None
        except ServerIncompatibilityError as exc:
            raise UserError(f"{what}: the server at {url} is too old for this client: {exc}") from None

    def tos_hook(self, response, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - a requests hook
        """Refuse a `missing_tos` answer here, before caveclient opens a web browser for it."""
        if response.status_code == 403 and missing_tos(response) is not None:
            raise self.access_error(response, response.url or "")
        return response

    def redirect_hook(self, response, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - a requests hook
        """middle_auth_client answers a request without a valid token with a 302 to its login page, not a 401
        (decorators.py); followed, caveclient would read the login page's HTML as JSON. The redirect is the token
        error, said here in one line."""
        if response.is_redirect and response.request is not None:
            login = response.headers.get("Location", "")
            raise UserError(self.token_not_valid(
                f"{response.request.url.split('?')[0][:200]} redirected to a login page "
                f"({login.split('?')[0][:120]}): "
            ))  # fmt: skip
        return response
