"""Who may talk to the cluster: CurveZMQ keys (:mod:`.keys`), what each role may do
(:mod:`.roles`) and the sockets that enforce both (:mod:`.curve`)."""
