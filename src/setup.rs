//! Everything a task needs to know before it reads a log line: the config, the registry and
//! the pricing catalogs, validated together.

use std::path::Path;

use crate::allotment::{day_terms, DayTerms, Org};
use crate::catalog;
use crate::config::Config;
use crate::pricing::Catalog;
use crate::registry::{self, Problem, Registry, RegistryRules};

#[derive(Debug, Clone)]
pub struct Setup {
    pub config: Config,
    pub registry: Registry,
    pub catalogs: Vec<Catalog>,
}

impl Setup {
    /// Loads the config file, then the registry, purchases and catalogs it names. A broken
    /// config file is an error; problems in the other inputs are returned beside the setup.
    pub fn load(config_file: &Path) -> anyhow::Result<(Setup, Vec<Problem>)> {
        let config = Config::load(config_file)?;
        let editions: Vec<String> = crate::allotment::EDITIONS
            .iter()
            .map(|e| e.to_string())
            .collect();
        let dcs: Vec<String> = config.migration.dc_cutover.keys().cloned().collect();
        let rules = RegistryRules {
            editions: &editions,
            data_centers: &dcs,
        };
        let (mut registry, mut problems) = registry::load(&config.orgs, &config.purchases, &rules);
        // An instance owns the orgs of its data centers; the others are not in its registry,
        // so their lines quarantine as unknown_org.
        for dc in &config.data_centers {
            if !dcs.contains(dc) {
                problems.push(Problem {
                    file: config.file.display().to_string(),
                    line: None,
                    field: Some("[daemon] data_centers".into()),
                    message: format!("{dc:?} has no [migration] dc_cutover date"),
                });
            }
        }
        if !config.data_centers.is_empty() {
            registry
                .orgs
                .retain(|_, o| config.data_centers.contains(&o.data_center));
            let orgs = &registry.orgs;
            registry.purchases.retain(|p| orgs.contains_key(&p.org_id));
        }
        let mut catalogs = Vec::new();
        for path in &config.pricing {
            match catalog::load(path) {
                Ok(c) => catalogs.push(c),
                Err(ps) => problems.extend(ps),
            }
        }
        let mut dates: Vec<_> = catalogs.iter().map(|c| c.effective_from).collect();
        dates.sort();
        if let Some(w) = dates.windows(2).find(|w| w[0] == w[1]) {
            problems.push(Problem {
                file: config.file.display().to_string(),
                line: None,
                field: Some("[paths] pricing".into()),
                message: format!(
                    "two catalogs take effect on {}; which one applies is ambiguous",
                    w[0]
                ),
            });
        }
        if catalogs.is_empty() && problems.is_empty() {
            problems.push(Problem {
                file: config.file.display().to_string(),
                line: None,
                field: Some("[paths] pricing".into()),
                message: "no pricing catalog".into(),
            });
        }
        Ok((
            Setup {
                config,
                registry,
                catalogs,
            },
            problems,
        ))
    }

    pub fn org(&self, org_id: &str) -> Option<&Org> {
        self.registry.orgs.get(org_id)
    }

    /// The terms of an org-day under today's registry and rules.
    pub fn terms(&self, org: &Org, day: chrono::NaiveDate) -> Option<DayTerms> {
        day_terms(
            org,
            day,
            &self.config.editions,
            &self.registry.purchases,
            &self.config.migration,
        )
    }
}
