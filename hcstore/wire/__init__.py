"""The wire: message format (protocol), the client side of sockets (transport), the serving loop (server).

Nothing here knows about objects or disks: it moves validated messages between processes.
"""
