"""One job of a study, from its inputs to its record: the inputs checked and named by content (`inputs`,
`checks`, `identity`), the plan and cost (`plan`), the cache of images, features and head phases (`cache`,
`features`), the claim on the job's identity and the lease that keeps it (`claims`, `leases`), and
the job itself (`job`)."""
