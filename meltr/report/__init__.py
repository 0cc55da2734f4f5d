"""The report: finished runs (`runs`), the scaling sweeps (`scaling`), and the tables, figures and csv files
both are written with (`render`)."""
