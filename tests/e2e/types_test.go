package e2e

import authenticationv1 "k8s.io/api/authentication/v1"

type (
	authenticationv1TokenRequest = authenticationv1.TokenRequest
	tokenSpec                    = authenticationv1.TokenRequestSpec
)
