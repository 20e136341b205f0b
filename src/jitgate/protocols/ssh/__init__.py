"""The SSH gateway: asyncssh server for clients, asyncssh client to the target."""
