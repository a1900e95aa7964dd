"""AWS request signing (SigV4) for Bedrock, with botocore's signer."""

from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)
    region: str = ""


def sign(
    credentials: AwsCredentials, service: str, url: str, body: bytes, headers: dict[str, str]
) -> dict[str, str]:
    """The headers to send for a POST of `body` to `url`, Authorization included.

    `url` must be exactly what goes on the wire (already percent-encoded).
    """
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    signer = SigV4Auth(
        Credentials(
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token or None,
        ),
        service,
        credentials.region,
    )
    signer.add_auth(request)
    return dict(request.headers.items())
