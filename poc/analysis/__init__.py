"""Reading finished runs: leaderboard, compare, statistics, evaluation, cost, agreement, studies, report."""
