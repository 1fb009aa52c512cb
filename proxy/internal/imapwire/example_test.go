package imapwire_test

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// A client reads a server's answer to its login, a literal included.
func Example() {
	r := bufio.NewReader(strings.NewReader("* ID (\"name\" {7}\r\nDovecot)\r\na1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"))
	for {
		line, err := imapwire.ReadLine(r, 64<<10)
		if err != nil {
			fmt.Println(err)
			return
		}
		if size, _, ok := imapwire.LiteralAtEnd(line); ok {
			lit := make([]byte, size)
			io.ReadFull(r, lit)
			fmt.Printf("literal %q\n", lit)
			continue // the rest of the line follows the literal
		}
		if status, code, ok := imapwire.ParseStatus(line, "a1"); ok {
			fmt.Println(status, imapwire.CapabilitiesFromCode(code))
			return
		}
	}
	// Output:
	// literal "Dovecot"
	// OK [IMAP4rev1 IDLE]
}
