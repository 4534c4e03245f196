package schema

import (
	"net/url"
	"strings"
)

// ConsoleURL is the address of a build's page in the web console
// (publicURL + "/ui/builds/" + taskID), where people follow it in a
// browser; publicURL is the dispatcher's public base URL
// (KILN_PUBLIC_URL), a trailing slash ignored. It is "" when publicURL is
// empty: with no public URL configured, nothing links to the console.
func ConsoleURL(publicURL, taskID string) string {
	if publicURL == "" {
		return ""
	}
	return strings.TrimSuffix(publicURL, "/") + "/ui/builds/" + url.PathEscape(taskID)
}
