package kubebox

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig for the identity in kp, with
// certificates embedded so the file works from anywhere.
func writeKubeconfig(path, server, user string, ca []byte, kp *keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubebox"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.Cert, ClientKeyData: kp.Key}
	cfg.Contexts["kubebox"] = &clientcmdapi.Context{Cluster: "kubebox", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "kubebox"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// restConfigFor is the client configuration for the identity in kp.
func restConfigFor(server string, ca []byte, kp *keyPair) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   ca,
			CertData: kp.Cert,
			KeyData:  kp.Key,
		},
		QPS:   100,
		Burst: 200,
	}
}
