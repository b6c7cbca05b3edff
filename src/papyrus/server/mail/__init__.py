"""Outgoing mail: messages rendered by a request, kept in a PostgreSQL outbox, delivered over
SMTP by a background sender in each API process (`outbox.MailSender`), and a local catcher for
`papyrus dev` (`catcher`). A request never talks to a mail server: it only inserts a row."""
