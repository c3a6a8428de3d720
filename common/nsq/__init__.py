"""Everything that talks to NSQ: the admin client of nsqd's and nsqlookupd's HTTP APIs
(`admin`), the pynsq patches and connection classes (`patches`), publishing in
acknowledged windows (`publish`) and the `Bus` transport on nsqd (`bus`)."""
