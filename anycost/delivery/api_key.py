"""Where the API key comes from, and a wrapper that keeps it out of logs and pickles.

The key is looked up on the worker, in `DoFn.setup()`: from an environment variable, or
from Google Secret Manager. Pipeline options and pickled DoFns only ever hold the *name*
of the variable or the secret's resource path.
"""
import os

from anycost.config import SECRET_RESOURCE


class ApiKeyError(Exception):
    """The key could not be found; the message says where we looked, never a key."""


class ApiKey:
    """The raw key. Its repr is masked and it refuses to be pickled."""
    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def reveal(self):
        return self._value

    def __repr__(self):
        return "ApiKey(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("the API key is never pickled")


def from_env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        raise ApiKeyError(f"the environment variable {name} (named by --api_key_env) is not set "
                          "or empty where the pipeline runs")
    return ApiKey(value)


def default_secret_client():
    """Google Secret Manager's client; needs the optional extra `pip install .[gcp]`."""
    try:
        from google.cloud import secretmanager  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ApiKeyError("--api_key_secret needs google-cloud-secret-manager where the pipeline runs: "
                          "install the connector with `pip install .[gcp]`") from None
    return secretmanager.SecretManagerServiceClient()


# Tests replace this with a fake; a real run uses Google's client.
secret_client_factory = default_secret_client


def from_secret_manager(resource):
    if not SECRET_RESOURCE.fullmatch(resource):
        raise ApiKeyError("--api_key_secret must look like projects/P/secrets/S/versions/V")
    try:
        response = secret_client_factory().access_secret_version(request={"name": resource})
        value = response.payload.data.decode("utf-8").strip()
    except ApiKeyError:
        raise
    except Exception as err:  # the client raises many types; the key is never in them
        raise ApiKeyError(f"could not read {resource} from Secret Manager: {type(err).__name__}: "
                          f"{str(err)[:200]}") from None
    if not value:
        raise ApiKeyError(f"the secret {resource} is empty")
    return ApiKey(value)


def load(api_key_env=None, api_key_secret=None):
    """The key from the one source the run names."""
    if api_key_secret:
        return from_secret_manager(api_key_secret)
    return from_env(api_key_env or "CLOUDZERO_API_KEY")
