//! The configured currencies, validated once at start-up.

use std::collections::BTreeMap;

use kassa_core::{Currency, CurrencyCode};

use crate::EngineError;

#[derive(Clone, Debug)]
pub struct Currencies {
    by_code: BTreeMap<String, Currency>,
}

impl Currencies {
    pub fn new(list: Vec<Currency>) -> Self {
        Self { by_code: list.into_iter().map(|c| (c.code.as_str().to_string(), c)).collect() }
    }

    /// All currencies in code order.
    pub fn all(&self) -> impl Iterator<Item = &Currency> {
        self.by_code.values()
    }

    pub fn get(&self, code: &str) -> Result<&Currency, EngineError> {
        self.by_code.get(code).ok_or_else(|| EngineError::UnknownCurrency(code.to_string()))
    }

    /// A configured currency that is active.
    pub fn active(&self, code: &str) -> Result<&Currency, EngineError> {
        let c = self.get(code)?;
        if c.active {
            Ok(c)
        } else {
            Err(EngineError::InactiveCurrency(code.to_string()))
        }
    }

    pub fn code(&self, code: &str) -> Result<CurrencyCode, EngineError> {
        Ok(self.get(code)?.code.clone())
    }
}
