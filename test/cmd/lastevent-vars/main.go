// Command lastevent-vars prints every LASTEVENT_* setting with its default as
// JSON, straight from proxy.Variables(), so that tools outside this module
// (the Helm chart test in test/helm) check against the config struct itself.
package main

import (
	"encoding/json"
	"os"

	"github.com/lastevent/lastevent/proxy"
)

func main() {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(proxy.Variables()); err != nil {
		os.Exit(1)
	}
}
