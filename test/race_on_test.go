//go:build race

package test

// raceEnabled: the tests run under -race, so the lastevent binary they start
// is built with -race too, and a data race in it fails the test.
const raceEnabled = true
