// Package clients holds lastevent.js, the browser helper (a plain ES module:
// copy the file), embedded for the Go programs that serve it, such as the
// demo's upstream.
package clients

import _ "embed"

// LasteventJS is the content of lastevent.js.
//
//go:embed lastevent.js
var LasteventJS []byte
