package edge

import (
	"encoding/base64"
	"encoding/hex"
	"mime"
	"net/http"
	"path"
)

// Attachment answers a build artifact's content as a download, never as a
// page: application/octet-stream, Content-Disposition attachment named
// after the path's last element, nosniff, a sandboxing CSP (a browser that
// renders it anyway runs nothing of it), and the Digest of sha256Hex.
func Attachment(w http.ResponseWriter, artifactPath, sha256Hex string, content []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(artifactPath)}))
	if sum, err := hex.DecodeString(sha256Hex); err == nil {
		h.Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(sum))
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	_, _ = w.Write(content)
}
