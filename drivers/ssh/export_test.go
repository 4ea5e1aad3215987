package ssh

// Quote and Command expose the quoting functions to the tests of package
// ssh_test.
var (
	Quote   = quote
	Command = command
)
